"""Text environments for search: ``envs.make("math/gsm8k")`` or ``gymnasium.make("mcts_agent/gsm8k-v0")``."""

from envs.base import EnvState, RewardMode, Task, TextEnv
from envs.registry import EnvEntry, get_entry, list_envs, load_tasks, make, register_env, unregister_env

__all__ = ["EnvEntry", "EnvState", "RewardMode", "Task", "TextEnv", "get_entry", "list_envs", "load_tasks",
           "make", "register_env", "unregister_env"]

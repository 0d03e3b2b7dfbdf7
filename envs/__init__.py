"""Text environments for search: ``mcts_agent.envs.make("math/gsm8k")`` or ``gymnasium.make("mcts_agent/gsm8k-v0")``."""

from mcts_agent.envs.base import Branching, EnvState, RewardMode, Task, TextEnv, Turn
from mcts_agent.envs.agent import AgentEnv, Outcome
from mcts_agent.envs.registry import EnvEntry, get_entry, list_envs, load_tasks, make, register_env, unregister_env

__all__ = ["AgentEnv", "Branching", "EnvEntry", "EnvState", "Outcome", "Turn", "RewardMode", "Task", "TextEnv", "get_entry", "list_envs", "load_tasks",
           "make", "register_env", "unregister_env"]

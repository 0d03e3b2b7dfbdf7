"""Gymnasium text envs that search can branch: the implementation of ``mcts_agent.env.SearchEnv``.

A ``TextEnv`` shows the policy a task, takes one action (a string) per ``step``, and
ends the episode as ``terminated`` when an answer is given or as ``truncated`` when
the step budget is spent. ``snapshot()`` returns an immutable, JSON-serializable
``EnvState``; ``restore(state)`` goes back to it; ``transition(state, action)`` steps
from any state without touching the env's own episode, which is how the planner
branches (from several threads at once). Gold answers reach search only in
``RewardMode.OUTCOME``. Multi-turn agent envs build on ``mcts_agent.envs.agent.AgentEnv``.
"""

from __future__ import annotations

import abc
from dataclasses import replace
from typing import Any, Sequence

import gymnasium
from gymnasium import spaces

from mcts_agent.env import Branching, ChatFormatter, EnvState, Message, RewardMode, Task, Transition, Turn
from mcts_agent.errors import EnvError

__all__ = ["Branching", "EnvState", "RewardMode", "Task", "TextEnv", "Turn", "UnicodeText"]


class UnicodeText(spaces.Text):
    """A Text space that accepts any string up to ``max_length`` characters."""

    def __init__(self, max_length: int, seed: int | None = None) -> None:
        super().__init__(max_length=max_length, min_length=0, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length


class TextEnv(gymnasium.Env[str, str], abc.ABC):
    """Base class of every text environment (single-turn reasoning envs use it directly).

    Subclasses define ``messages`` (the chat shown to the policy), ``extract_answer``
    (is this step a final answer?) and ``verify`` (is the answer right?). The episode's
    logic is the pure ``advance(state, action)``; ``step`` and ``transition`` both call it.
    """

    metadata = {"render_modes": ["ansi"]}
    step_delimiter: str = "\n"
    max_text_length: int = 100_000
    branching: Branching = Branching.SNAPSHOT
    turn_based: bool = False  # actions are reasoning steps continuing one assistant message
    keep_stop: bool = False

    def __init__(self, tasks: Sequence[Task] = (), *, max_steps: int = 8,
                 reward_mode: RewardMode | str = RewardMode.NONE, render_mode: str | None = None) -> None:
        if not isinstance(max_steps, int) or max_steps < 1:
            raise EnvError(f"max_steps must be an int >= 1, got {max_steps!r}")
        try:
            self.reward_mode = RewardMode(reward_mode)
        except ValueError:
            raise EnvError(f"reward_mode must be one of {[m.value for m in RewardMode]}, got {reward_mode!r}") from None
        self.tasks = list(tasks)
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.observation_space = UnicodeText(self.max_text_length)
        self.action_space = UnicodeText(self.max_text_length)
        self._state: EnvState | None = None

    # ----- what subclasses define -----------------------------------------------------
    @abc.abstractmethod
    def messages(self, task: Task) -> list[Message]:
        """Chat messages that pose ``task`` to the policy (never containing the gold answer)."""

    @abc.abstractmethod
    def extract_answer(self, step: str) -> str | None:
        """The final answer if ``step`` gives one, else None."""

    @abc.abstractmethod
    def verify(self, answer: str | None, task: Task) -> bool:
        """Whether ``answer`` solves ``task`` (uses the gold answer)."""

    def verify_state(self, state: EnvState, task: Task) -> bool:
        """Whether the episode ending in ``state`` solves ``task`` (default: its answer is right)."""
        return state.answer is not None and self.verify(state.answer, task)

    def answer_of(self, state: EnvState, action: str) -> str | None:
        """The final answer if ``action`` taken from ``state`` gives one (default: ``extract_answer``)."""
        return self.extract_answer(action)

    @property
    def action_stop(self) -> tuple[str, ...]:
        """Stop strings that end one action: the step delimiter."""
        return (self.step_delimiter,)

    # ----- the episode's logic (pure: safe from several threads) ------------------------
    def initial_state(self, task: Task) -> EnvState:
        """The state at the start of ``task``, as search may see it."""
        return EnvState(task=self.search_view(task))

    def advance(self, state: EnvState, action: str) -> Transition:
        """The transition from ``state`` by ``action``; ``state`` is left as it was."""
        if state.done:
            raise EnvError("the episode is over; call reset() or restore() a live state")
        if not isinstance(action, str):
            raise EnvError(f"action must be a str (one reasoning step), got {type(action).__name__}")
        answer = self.answer_of(state, action)
        turns = state.turns + (Turn(action),)
        terminated = answer is not None
        truncated = not terminated and len(turns) >= self.max_steps
        nxt = replace(state, turns=turns, answer=answer, terminated=terminated, truncated=truncated)
        reward = 0.0
        if terminated and self.reward_mode is RewardMode.OUTCOME:
            reward = float(self.verify(answer, state.task))
        return nxt, reward, terminated, truncated, {"answer": answer}

    def transition(self, state: EnvState, action: str) -> Transition:
        """Step from ``state`` without disturbing it or the env's own episode."""
        if not isinstance(state, EnvState):
            raise EnvError(f"transition() needs an EnvState, got {type(state).__name__}")
        return self.advance(state, action)

    # ----- the Gymnasium API ----------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        if "task" in options:
            task = options["task"]
            if not isinstance(task, Task):
                raise EnvError(f"options['task'] must be a Task, got {type(task).__name__}")
        elif self.tasks:
            idx = options.get("task_index", int(self.np_random.integers(len(self.tasks))))
            if not 0 <= idx < len(self.tasks):
                raise EnvError(f"options['task_index'] must be in [0, {len(self.tasks)}), got {idx}")
            task = self.tasks[idx]
        else:
            raise EnvError(f"{type(self).__name__}.reset needs options={{'task': Task}} or an env built with tasks")
        self._state = self.initial_state(task)
        return self.observation(), {"task_id": task.id}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise EnvError("call reset() before step()")
        self._state, reward, terminated, truncated, info = self.advance(self._state, action)
        return self.observation(), reward, terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self.observation()
        return None

    # ----- branching ------------------------------------------------------------------
    def snapshot(self) -> EnvState:
        if self._state is None:
            raise EnvError("call reset() before snapshot()")
        return self._state

    def restore(self, state: EnvState) -> None:
        if not isinstance(state, EnvState):
            raise EnvError(f"restore() needs an EnvState, got {type(state).__name__}")
        self._state = state

    # ----- prompts --------------------------------------------------------------------
    def search_view(self, task: Task) -> Task:
        """The task as search may see it: gold stripped unless rewards are outcome-based."""
        return task if self.reward_mode is RewardMode.OUTCOME else replace(task, answer=None)

    def answer_key(self, answer: str) -> str:
        """What makes two answers the same when voting."""
        return answer.strip()

    def observation(self, state: EnvState | None = None) -> str:
        """The question followed by the steps taken so far."""
        s = state or self._state
        assert s is not None
        return s.task.question + "\n\n" + self.trajectory(s)

    def trajectory(self, state: EnvState) -> str:
        """The steps so far, each followed by the delimiter (what the policy continues)."""
        return "".join(step + self.step_delimiter for step in state.steps)

    def policy_prompt(self, state: EnvState, format_chat: ChatFormatter) -> str:
        """The full text the policy continues from ``state``."""
        return format_chat(self.messages(state.task)) + self.trajectory(state)

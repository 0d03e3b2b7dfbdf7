"""The environment contract: Gymnasium text envs that search can branch.

A ``TextEnv`` shows the policy a task, takes one reasoning step (a string) per
``step``, and ends the episode as ``terminated`` when an answer is given or as
``truncated`` when the step budget is spent. ``snapshot()`` returns an immutable,
JSON-serializable ``EnvState``; ``restore(state)`` goes back to it, which is how the
planner branches. Gold answers reach search only in ``RewardMode.OUTCOME``.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import gymnasium
from gymnasium import spaces

from mcts_agent.errors import EnvError


class RewardMode(str, enum.Enum):
    """What search may learn from the environment."""

    NONE = "none"  # evaluation: gold answers are stripped; every reward is 0
    OUTCOME = "outcome"  # training: terminal reward = verifier(answer, gold)


@dataclass(frozen=True)
class Task:
    """One problem. ``answer`` is the gold answer; ``meta`` holds env-specific data."""

    id: str
    question: str
    answer: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnvState:
    """An immutable, serializable snapshot of an episode."""

    task: Task
    steps: tuple[str, ...] = ()
    answer: str | None = None
    terminated: bool = False
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        t = self.task
        return {"task": {"id": t.id, "question": t.question, "answer": t.answer, "meta": dict(t.meta)},
                "steps": list(self.steps), "answer": self.answer,
                "terminated": self.terminated, "truncated": self.truncated}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EnvState":
        return cls(task=Task(**d["task"]), steps=tuple(d["steps"]), answer=d["answer"],
                   terminated=d["terminated"], truncated=d["truncated"])


class UnicodeText(spaces.Text):
    """A Text space that accepts any string up to ``max_length`` characters."""

    def __init__(self, max_length: int, seed: int | None = None) -> None:
        super().__init__(max_length=max_length, min_length=0, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length


class TextEnv(gymnasium.Env[str, str], abc.ABC):
    """Base class of every text environment.

    Subclasses define ``messages`` (the chat shown to the policy), ``extract_answer``
    (is this step a final answer?) and ``verify`` (is the answer right?).
    """

    metadata = {"render_modes": ["ansi"]}
    step_delimiter: str = "\n"
    max_text_length: int = 100_000

    def __init__(self, tasks: Sequence[Task] = (), *, max_steps: int = 8,
                 reward_mode: RewardMode | str = RewardMode.NONE, render_mode: str | None = None) -> None:
        if max_steps < 1:
            raise EnvError(f"max_steps must be >= 1, got {max_steps}")
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
    def messages(self, task: Task) -> list[dict[str, str]]:
        """Chat messages that pose ``task`` to the policy (never containing the gold answer)."""

    @abc.abstractmethod
    def extract_answer(self, step: str) -> str | None:
        """The final answer if ``step`` gives one, else None."""

    @abc.abstractmethod
    def verify(self, answer: str | None, task: Task) -> bool:
        """Whether ``answer`` solves ``task`` (uses the gold answer)."""

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
        self._state = EnvState(task=self.search_view(task))
        return self.observation(), {"task_id": task.id}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise EnvError("call reset() before step()")
        if self._state.terminated or self._state.truncated:
            raise EnvError("the episode is over; call reset() or restore() a live state")
        if not isinstance(action, str):
            raise EnvError(f"action must be a str (one reasoning step), got {type(action).__name__}")
        s = self._state
        answer = self.extract_answer(action)
        steps = s.steps + (action,)
        terminated = answer is not None
        truncated = not terminated and len(steps) >= self.max_steps
        self._state = EnvState(task=s.task, steps=steps, answer=answer, terminated=terminated, truncated=truncated)
        reward = 0.0
        if terminated and self.reward_mode is RewardMode.OUTCOME:
            reward = float(self.verify(answer, s.task))
        return self.observation(), reward, terminated, truncated, {"answer": answer}

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

    def transition(self, state: EnvState, action: str) -> tuple[EnvState, float, bool, bool, dict[str, Any]]:
        """Step from ``state`` without disturbing it: restore, step, snapshot."""
        self.restore(state)
        _, reward, term, trunc, info = self.step(action)
        return self._state, reward, term, trunc, info  # type: ignore[return-value]

    # ----- prompts --------------------------------------------------------------------
    def search_view(self, task: Task) -> Task:
        """The task as search may see it: gold stripped unless rewards are outcome-based."""
        return task if self.reward_mode is RewardMode.OUTCOME else replace(task, answer=None)

    def observation(self, state: EnvState | None = None) -> str:
        """The question followed by the steps taken so far."""
        s = state or self._state
        assert s is not None
        return s.task.question + "\n\n" + self.trajectory(s)

    def trajectory(self, state: EnvState) -> str:
        """The steps so far, each followed by the delimiter (what the policy continues)."""
        return "".join(step + self.step_delimiter for step in state.steps)

    def policy_prompt(self, state: EnvState, format_chat: Callable[[Sequence[dict[str, str]]], str]) -> str:
        """The full text the policy continues from ``state``."""
        return format_chat(self.messages(state.task)) + self.trajectory(state)

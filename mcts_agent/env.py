"""The environment contract the planner searches: data types and the ``SearchEnv`` protocol.

An episode is a list of turns: the policy's action, then (in agent environments) the
world's observation. ``EnvState`` is an immutable snapshot of an episode: the turns so far
plus an env-specific, JSON-serializable ``payload`` (a tool backend's state, an inventory,
a patch). ``transition(state, action)`` steps from a state without disturbing it, so the
planner branches by calling it on any node's state, from several threads at once.

An env branches either by **snapshot/restore** (its whole state is in ``payload``) or by
**replay** (reset with the task's seed and replay the action prefix on a live instance,
e.g. a browser): ``SearchEnv.branching`` says which; the planner treats both alike, and
``mcts_agent.replay.ReplayPool`` keeps live instances keyed by action prefix.

The Gymnasium classes that implement this (``mcts_agent.envs.base.TextEnv`` and
``AgentEnv``) live in ``envs/``; nothing here imports them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, runtime_checkable


class RewardMode(str, enum.Enum):
    """What search may learn from the environment."""

    NONE = "none"  # evaluation: gold answers are stripped; every reward is 0
    OUTCOME = "outcome"  # training: terminal reward = verifier(answer, gold)


class Branching(str, enum.Enum):
    """How an env goes back to an earlier state."""

    SNAPSHOT = "snapshot"  # the state is a cheap value (payload): restore it directly
    REPLAY = "replay"  # reset with the task's seed, then replay the action prefix


@dataclass(frozen=True)
class Task:
    """One problem. ``answer`` is the gold answer; ``meta`` holds env-specific data."""

    id: str
    question: str
    answer: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "question": self.question, "answer": self.answer, "meta": dict(self.meta)}


@dataclass(frozen=True)
class Turn:
    """One action and the world's reply to it.

    ``observation`` is None for envs whose actions are reasoning steps inside one
    assistant message (math); ``role`` is the chat role the observation is shown in
    ("tool" for a tool result, "user" for a new request).
    """

    action: str
    observation: str | None = None
    role: str = "tool"


@dataclass(frozen=True)
class EnvState:
    """An immutable, serializable snapshot of an episode.

    ``payload`` is the env's own JSON-serializable state. ``live`` is an optional
    runtime-only cache the env may keep beside it (e.g. deep-copyable backend objects
    rebuilt from ``payload`` when absent); it is never serialized or compared, and
    ``transition`` must not mutate it.
    """

    task: Task
    turns: tuple[Turn, ...] = ()
    payload: Any = None
    answer: str | None = None
    terminated: bool = False
    truncated: bool = False
    live: Any = field(default=None, compare=False, repr=False)

    @property
    def steps(self) -> tuple[str, ...]:
        """The actions taken so far."""
        return tuple(t.action for t in self.turns)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task.to_dict(),
                "turns": [{"action": t.action, "observation": t.observation, "role": t.role} for t in self.turns],
                "payload": self.payload, "answer": self.answer,
                "terminated": self.terminated, "truncated": self.truncated}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EnvState":
        turns = tuple(Turn(**t) for t in d.get("turns", ())) or tuple(Turn(s) for s in d.get("steps", ()))
        return cls(task=Task(**d["task"]), turns=turns, payload=d.get("payload"), answer=d["answer"],
                   terminated=d["terminated"], truncated=d["truncated"])


Transition = tuple[EnvState, float, bool, bool, dict[str, Any]]
"""``(next state, reward, terminated, truncated, info)``: Gymnasium's step tuple with the state first."""

Message = dict[str, str]
ChatFormatter = Callable[..., str]
"""``format_chat(messages, tools=None) -> str``: a backend's chat template, ending where the assistant speaks."""


@runtime_checkable
class SearchEnv(Protocol):
    """What the planner needs from an environment (``mcts_agent.envs.base.TextEnv`` implements it).

    Attributes:
        reward_mode: whether gold answers (and so rewards) reach search.
        branching: snapshot/restore or replay (see the module docstring).
        turn_based: True when each action is a whole assistant turn that the world
            answers (tool use, web, SWE); False when actions are reasoning steps that
            continue one assistant message (math, code).
        step_delimiter: what ends a reasoning step (the stop string of a step request).
        action_stop: the stop strings that end one action.
        keep_stop: whether the stop string that ended an action is part of it
            (e.g. a closing ``</tool_call>`` tag).

    Optional hook: an env with ``transition_batch(items: list[tuple[EnvState, str]]) ->
    list[Transition]`` (results in input order) gets each round's plain one-step transitions
    in ONE call instead of one executor item each (e.g. ``ImaginedEnv``, whose world model
    predicts a whole round's observations in one batched model call). Actions cut by the
    token cap never reach it; rounds that replay whole solutions use the executor as usual.
    """

    reward_mode: RewardMode
    branching: Branching
    turn_based: bool
    step_delimiter: str
    action_stop: tuple[str, ...]
    keep_stop: bool

    def initial_state(self, task: Task) -> EnvState:
        """The state at the start of ``task`` (gold stripped unless rewards are outcome-based)."""

    def transition(self, state: EnvState, action: str) -> Transition:
        """Take ``action`` from ``state`` without disturbing it; safe to call from several threads."""

    def policy_prompt(self, state: EnvState, format_chat: ChatFormatter) -> str:
        """The full text the policy continues from ``state``."""

    def answer_key(self, answer: str) -> str:
        """What makes two answers the same (for voting)."""


SEARCH_ENV_ATTRS = ("reward_mode", "branching", "turn_based", "step_delimiter", "action_stop", "keep_stop",
                    "initial_state", "transition", "policy_prompt", "answer_key")
"""The names ``SearchEnv`` requires."""


def check_search_env(env: Any) -> None:
    """Raise ``TypeError`` naming what ``env`` lacks of the ``SearchEnv`` protocol."""
    missing = [name for name in SEARCH_ENV_ATTRS if not hasattr(env, name)]
    if missing:
        raise TypeError(f"{type(env).__name__} is not a SearchEnv: it lacks {missing}")


def render_turns(state: EnvState) -> list[Message]:
    """The episode's turns as chat messages: each action an assistant turn, each observation after it."""
    out: list[Message] = []
    for t in state.turns:
        out.append({"role": "assistant", "content": t.action})
        if t.observation is not None:
            out.append({"role": t.role, "content": t.observation})
    return out

"""Multi-turn agent environments: the policy acts, the world answers, search branches on the episode.

An ``AgentEnv`` episode is a list of turns. Each action is a whole assistant turn (it
ends at the model's end of turn, or at one of ``stop``); the world's reply is shown as a
``tool`` (or ``user``) turn in the model's own chat template, with the env's tool
schemas passed to the template. The world's state lives in ``EnvState.payload``
(JSON-serializable) with an optional runtime ``live`` cache beside it (see
``mcts_agent.env.EnvState``).

A subclass defines four methods:

* ``messages(task)``: the system and first user message (never the gold answer);
* ``start(task) -> (payload, live)``: the world at the start of the task;
* ``act(state, action) -> Outcome``: what the action does (must not mutate ``state``);
  a malformed action is an error observation, never an exception;
* ``verify_state(state, task)``: whether the episode solved the task (uses the gold).

and optionally ``tools(task)`` (OpenAI-style function schemas). Rewards reach search only
in ``RewardMode.OUTCOME``; the end of an episode is the world's to announce in any mode.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, replace
from typing import Any

from mcts_agent.env import ChatFormatter, EnvState, Message, RewardMode, Task, Transition, Turn, render_turns
from mcts_agent.envs.base import TextEnv
from mcts_agent.errors import EnvError


@dataclass(frozen=True)
class Outcome:
    """What one action did to the world."""

    observation: str  # the world's reply, shown to the policy
    payload: Any = None  # the world's new JSON-serializable state
    live: Any = None  # optional runtime cache of that state (not serialized)
    reward: float = 0.0  # the env's own reward (shown to search only in outcome mode)
    terminated: bool = False  # the episode is over (the task is done or failed for good)
    answer: str | None = None  # what the episode answered, for voting and results
    role: str = "tool"  # chat role of the observation
    info: dict[str, Any] = field(default_factory=dict)


class AgentEnv(TextEnv):
    """Base class of multi-turn envs (tool use, text worlds, web, SWE)."""

    turn_based = True
    stop: tuple[str, ...] = ()  # extra stop strings that end an action (the end of turn always does)

    @property
    def action_stop(self) -> tuple[str, ...]:
        return tuple(self.stop)

    # ----- what subclasses define -----------------------------------------------------
    @abc.abstractmethod
    def start(self, task: Task) -> tuple[Any, Any]:
        """``(payload, live)`` of the world at the start of ``task``."""

    @abc.abstractmethod
    def act(self, state: EnvState, action: str) -> Outcome:
        """The outcome of ``action`` from ``state``; ``state`` (and ``state.live``) must stay as they were."""

    @abc.abstractmethod
    def verify_state(self, state: EnvState, task: Task) -> bool:
        """Whether the episode ending in ``state`` solved ``task`` (``task`` carries the gold)."""

    def tools(self, task: Task) -> list[dict[str, Any]] | None:
        """OpenAI-style tool schemas shown to the policy through its chat template (None: no tools)."""
        return None

    # ----- TextEnv's hooks, answered for multi-turn episodes ---------------------------
    def extract_answer(self, step: str) -> str | None:
        return None  # answers come from ``act``

    def verify(self, answer: str | None, task: Task) -> bool:
        raise EnvError(f"{type(self).__name__} judges whole episodes: call verify_state(state, task)")

    def initial_state(self, task: Task) -> EnvState:
        view = self.search_view(task)
        payload, live = self.start(task)
        return EnvState(task=view, payload=payload, live=live)

    def advance(self, state: EnvState, action: str) -> Transition:
        if state.done:
            raise EnvError("the episode is over; call reset() or restore() a live state")
        if not isinstance(action, str):
            raise EnvError(f"action must be a str, got {type(action).__name__}")
        out = self.act(state, action)
        turns = state.turns + (Turn(action, out.observation, out.role),)
        truncated = not out.terminated and len(turns) >= self.max_steps
        nxt = replace(state, turns=turns, payload=out.payload, live=out.live, answer=out.answer,
                      terminated=out.terminated, truncated=truncated)
        reward = float(out.reward) if self.reward_mode is RewardMode.OUTCOME else 0.0
        return nxt, reward, out.terminated, truncated, {"answer": out.answer, **out.info}

    # ----- prompts --------------------------------------------------------------------
    def policy_prompt(self, state: EnvState, format_chat: ChatFormatter) -> str:
        """The task's messages, then each action as an assistant turn and each observation after it."""
        messages: list[Message] = self.messages(state.task) + render_turns(state)
        tools = self.tools(state.task)
        return format_chat(messages, tools=tools) if tools else format_chat(messages)

    def observation(self, state: EnvState | None = None) -> str:
        """The Gymnasium observation: the world's latest reply (the task's request at the start)."""
        s = state or self._state
        assert s is not None
        if s.turns and s.turns[-1].observation is not None:
            return s.turns[-1].observation
        return s.task.question

    def trajectory(self, state: EnvState) -> str:
        return "".join(f"> {t.action}\n{t.observation or ''}\n" for t in state.turns)

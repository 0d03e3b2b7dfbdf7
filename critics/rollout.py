"""Rollout critic: finish each episode greedily, then score where it ended.

All live nodes are completed in ONE ``backend.generate`` call (temperature 0, no
stop at the step delimiter, ``max_tokens`` budget). Each completion is split into
steps with ``env.step_delimiter`` and replayed through ``env.transition`` from the
node's state until the episode ends: in this thread, or, inside a search, on the planner's
executor (threads, processes or Ray actors: ``use_executor``), one item per rollout. The final state's value is its reward in
``RewardMode.OUTCOME`` when the episode ended; otherwise (evaluation, or a
rollout cut short by ``max_tokens``) it is the inner critic's value of the final
state, for all of them in one batched call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from mcts_agent.critic import Critic, NodeView
from mcts_agent.envs.base import EnvState, RewardMode, TextEnv
from mcts_agent.errors import ConfigError, CriticError, EnvError
from mcts_agent.executor import Executor
from mcts_agent.llm.types import Backend, FinishReason, GenerationRequest


@dataclass
class RolloutConfig:
    """The rollout budget and what an unfinished rollout is worth without an inner critic."""

    max_tokens: int = field(default=256, metadata={"help": "Token budget of each greedy completion."})
    unfinished_value: float = field(default=0.0, metadata={"help": "Value of a rollout that did not end when there is no inner critic (OUTCOME mode)."})

    def __post_init__(self) -> None:
        if not (isinstance(self.max_tokens, int) and self.max_tokens >= 1):
            raise ConfigError(f"RolloutConfig.max_tokens must be an int >= 1, got {self.max_tokens!r}")
        if not (math.isfinite(self.unfinished_value) and 0.0 <= self.unfinished_value <= 1.0):
            raise ConfigError(f"RolloutConfig.unfinished_value must be in [0, 1], got {self.unfinished_value!r}")


@dataclass
class RolloutStats:
    """Counters over the critic's lifetime."""

    calls: int = 0
    rollouts: int = 0  # completions generated
    steps_replayed: int = 0
    finished: int = 0  # rollouts whose episode ended (terminated or truncated)
    unfinished: int = 0
    env_errors: int = 0  # steps the env rejected (the rollout stops there)
    generated_tokens: int = 0


@dataclass(frozen=True)
class _Final:
    state: EnvState
    reward: float | None

    @property
    def ended(self) -> bool:
        return self.state.terminated or self.state.truncated


class RolloutCritic(Critic):
    """Greedy rollouts to the end of the episode, all nodes in one generate call."""

    name = "rollout"

    def __init__(self, backend: Backend, env: TextEnv, inner: Critic | None = None,
                 config: RolloutConfig | None = None) -> None:
        if not isinstance(env, TextEnv):
            raise ConfigError(f"RolloutCritic needs an envs.base.TextEnv, got {type(env).__name__}")
        if env.turn_based:
            raise ConfigError(f"RolloutCritic replays one sampled solution step by step, which a turn-based env "
                              f"({type(env).__name__}: the world answers each action) cannot do; use self-eval, "
                              "verifier or judge there")
        if inner is None and env.reward_mode is not RewardMode.OUTCOME:
            raise ConfigError(f"RolloutCritic in reward mode {env.reward_mode.value!r} needs an inner critic to score "
                              "the final states (rewards carry no gold there); pass inner=SelfEvalCritic(backend), say")
        self.backend, self.env, self.inner = backend, env, inner
        self.config = config or RolloutConfig()
        self.stats = RolloutStats()
        self.last_final_states: list[EnvState] = []
        self.executor: Executor | None = None

    def use_executor(self, executor: Any) -> None:
        self.executor = executor

    def evaluate(self, nodes: Sequence[NodeView]) -> list[float]:
        self.stats.calls += 1
        for i, node in enumerate(nodes):
            if not isinstance(node.state, EnvState):
                raise CriticError(f"critic 'rollout' needs NodeView.state (an EnvState) at node {i} of {len(nodes)}, "
                                  f"got {type(node.state).__name__}")
        finals = [_Final(n.state, n.reward) for n in nodes]
        live = [i for i, f in enumerate(finals) if not f.ended]
        if live:
            finals_live = self._rollout([nodes[i].state for i in live])
            for i, f in zip(live, finals_live):
                finals[i] = f
        self.last_final_states = [f.state for f in finals]
        return self._values(finals)

    def _rollout(self, states: list[EnvState]) -> list[_Final]:
        """One generate call for every state, then replay each completion through the env."""
        fmt = self.backend.format_chat
        requests = [GenerationRequest(prompt=self.env.policy_prompt(s, fmt), n=1, max_tokens=self.config.max_tokens,
                                      temperature=0.0) for s in states]
        outputs = self.backend.generate(requests)
        if len(outputs) != len(requests):
            raise CriticError(f"backend.generate returned {len(outputs)} results for {len(requests)} rollout requests")
        self.stats.rollouts += len(requests)
        self.stats.generated_tokens += sum(len(out[0].token_ids) for out in outputs)
        jobs = [(s, out[0].text, out[0].finish_reason) for s, out in zip(states, outputs)]
        if self.executor is not None:
            replayed = self.executor.map(replay_rollout, self.env, jobs)
        else:
            replayed = [replay_rollout(self.env, job) for job in jobs]
        finals = []
        for final, steps, errors in replayed:
            self.stats.steps_replayed += steps
            self.stats.env_errors += errors
            self.stats.finished += final.ended
            self.stats.unfinished += not final.ended
            finals.append(final)
        return finals

    def _values(self, finals: list[_Final]) -> list[float]:
        outcome = self.env.reward_mode is RewardMode.OUTCOME
        values: list[float | None] = [None] * len(finals)
        rest: list[int] = []
        for i, f in enumerate(finals):
            if outcome and f.ended:
                r = 0.0 if f.reward is None else f.reward
                if not (math.isfinite(r) and 0.0 <= r <= 1.0):
                    raise CriticError(f"critic 'rollout' got reward {r!r} for rollout {i}; expected a number in [0, 1]")
                values[i] = float(r)
            elif self.inner is None:
                values[i] = self.config.unfinished_value
            else:
                rest.append(i)
        if rest:  # the inner critic scores every remaining final state in one call
            views = [self._view(finals[i]) for i in rest]
            for i, v in zip(rest, self.inner(views)):
                values[i] = v
        return values  # type: ignore[return-value]

    def _view(self, f: _Final) -> NodeView:
        s = f.state
        return NodeView(prompt=self.env.policy_prompt(s, self.backend.format_chat), question=s.task.question,
                        steps=s.steps, answer=s.answer, terminal=s.terminated, reward=f.reward, state=s)


def replay_rollout(env: TextEnv, job: tuple[EnvState, str, FinishReason]) -> tuple[_Final, int, int]:
    """Step a rollout's completion from its state until the episode ends (an executor item):
    ``(final, steps replayed, env errors)``. ``env.transition`` is pure: the env is not moved."""
    state, text, finish = job
    pieces = text.split(env.step_delimiter)
    if finish is FinishReason.LENGTH:
        pieces = pieces[:-1]  # the last piece was cut mid-step
    reward: float | None = None
    steps = errors = 0
    for piece in (p.strip() for p in pieces):
        if not piece:  # blank lines between steps are not steps
            continue
        try:
            state, reward, term, trunc, _ = env.transition(state, piece)
        except EnvError:
            errors += 1
            break
        steps += 1
        if term or trunc:
            break
    return _Final(state, reward), steps, errors

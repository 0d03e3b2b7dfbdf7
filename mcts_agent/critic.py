"""The critic contract: score a whole batch of nodes in one call."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, Sequence

from mcts_agent.errors import CriticError
from mcts_agent.llm.types import Evaluation


@dataclass(frozen=True)
class NodeView:
    """What a critic may see of a node: never the gold answer.

    ``prompt`` is the full policy text up to and including the node's last step.
    ``reward`` is the environment's reward (non-zero only in outcome-reward training).
    ``state`` lets critics that act (rollouts) continue the episode from this node.
    ``evaluation`` is the backend's fused evaluation of the node's sample, when the planner
    asked for one (see ``Critic.prompt_suffix``); a critic checks its text before using it.
    """

    prompt: str
    question: str
    steps: tuple[str, ...]
    answer: str | None
    terminal: bool
    reward: float | None = None
    state: Any = None  # the env snapshot (envs.base.EnvState, gold stripped in evaluation)
    evaluation: Evaluation | None = None


class Critic(abc.ABC):
    """Maps a batch of nodes to values in [0, 1] (estimated probability of success)."""

    name: str = "critic"

    @abc.abstractmethod
    def evaluate(self, nodes: Sequence[NodeView]) -> list[float]:
        """One value per node, in order, for the whole batch at once."""

    def prompt_suffix(self) -> tuple[str, tuple[str, ...]] | None:
        """``(suffix, candidates)`` when this critic reads next-token candidates after
        ``node.prompt + suffix``: the planner may then have the backend score them while
        generating the node (fused evaluation). None (the default): never fused."""
        return None

    def use_executor(self, executor: Any) -> None:
        """Run this critic's env steps (rollout replays) on ``executor`` (a ``mcts_agent.executor.Executor``;
        None: in the calling thread). The planner lends its own for each run and takes it back at the end.
        A critic that steps no env ignores it (the default)."""

    def __call__(self, nodes: Sequence[NodeView]) -> list[float]:
        if not nodes:
            return []
        return check_values(self.name, self.evaluate(nodes), len(nodes))


def check_values(name: str, values: Sequence[float], expected: int) -> list[float]:
    """Reject NaN, infinite or miscounted critic output with a clear error."""
    values = list(values)
    if len(values) != expected:
        raise CriticError(f"critic {name!r} returned {len(values)} values for {expected} nodes")
    for i, v in enumerate(values):
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise CriticError(f"critic {name!r} returned a non-finite value {v!r} for node {i} of {expected}")
    return [float(v) for v in values]

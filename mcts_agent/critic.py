"""The critic contract: score a whole batch of nodes in one call."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, Sequence

from mcts_agent.errors import CriticError


@dataclass(frozen=True)
class NodeView:
    """What a critic may see of a node: never the gold answer.

    ``prompt`` is the full policy text up to and including the node's last step.
    ``reward`` is the environment's reward (non-zero only in outcome-reward training).
    ``state`` lets critics that act (rollouts) continue the episode from this node.
    """

    prompt: str
    question: str
    steps: tuple[str, ...]
    answer: str | None
    terminal: bool
    reward: float | None = None
    state: Any = None  # the env snapshot (envs.base.EnvState, gold stripped in evaluation)


class Critic(abc.ABC):
    """Maps a batch of nodes to values in [0, 1] (estimated probability of success)."""

    name: str = "critic"

    @abc.abstractmethod
    def evaluate(self, nodes: Sequence[NodeView]) -> list[float]:
        """One value per node, in order, for the whole batch at once."""

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

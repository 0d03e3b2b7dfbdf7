"""A critic that knows nothing: every node gets the same prior value."""

from __future__ import annotations

import math
from typing import Sequence

from mcts_agent.critic import Critic, NodeView
from mcts_agent.errors import ConfigError


class ConstantCritic(Critic):
    """Returns ``value`` for every node (the ``none`` critic; a fallback prior)."""

    name = "constant"

    def __init__(self, value: float = 0.5) -> None:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ConfigError(f"ConstantCritic value must be a number in [0, 1], got {value!r}")
        self.value = float(value)

    def evaluate(self, nodes: Sequence[NodeView]) -> list[float]:
        return [self.value] * len(nodes)

"""Outcome verifier: the environment's reward at terminal nodes, a fallback elsewhere.

Gold answers and evaluation
---------------------------
This critic reads nothing but ``NodeView.terminal`` and ``NodeView.reward`` (never
``state`` or the task), so it can only know what the environment's reward says.
In ``RewardMode.OUTCOME`` (training) a terminal node's reward is the verifier's
verdict against the gold answer, and that is its value. In ``RewardMode.NONE``
(evaluation) the env strips gold and every reward is 0, which carries no
information: there the critic ignores rewards and scores every node with its
fallback, so in evaluation it is exactly its fallback critic. ``reward_mode`` is a
required argument so that a run never silently reads 0-rewards as "wrong".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from mcts_agent.critic import Critic, NodeView
from mcts_agent.critics.constant import ConstantCritic
from mcts_agent.errors import ConfigError, CriticError
from mcts_agent.envs.base import RewardMode


@dataclass
class VerifierConfig:
    """How rewards map to values, and the prior used when there is no fallback critic."""

    prior: float = field(default=0.5, metadata={"help": "Value of non-terminal nodes when no fallback critic is given."})
    reward_range: tuple[float, float] = field(default=(0.0, 1.0), metadata={"help": "(low, high) env rewards, mapped linearly to values 0 and 1."})

    def __post_init__(self) -> None:
        if not (math.isfinite(self.prior) and 0.0 <= self.prior <= 1.0):
            raise ConfigError(f"VerifierConfig.prior must be in [0, 1], got {self.prior!r}")
        lo, hi = self.reward_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ConfigError(f"VerifierConfig.reward_range must be finite (low, high) with low < high, got {self.reward_range!r}")


class OutcomeVerifierCritic(Critic):
    """Terminal nodes: the env reward (OUTCOME mode only). Others: ``fallback`` or a prior."""

    name = "verifier"

    def __init__(self, fallback: Critic | None = None, *, reward_mode: RewardMode | str,
                 config: VerifierConfig | None = None) -> None:
        try:
            self.reward_mode = RewardMode(reward_mode)
        except ValueError:
            raise ConfigError(f"reward_mode must be one of {[m.value for m in RewardMode]}, got {reward_mode!r}") from None
        self.config = config or VerifierConfig()
        self.fallback = fallback if fallback is not None else ConstantCritic(self.config.prior)

    def uses_reward(self, node: NodeView) -> bool:
        """Whether ``node``'s value comes from its reward rather than the fallback."""
        return self.reward_mode is RewardMode.OUTCOME and node.terminal and node.reward is not None

    def evaluate(self, nodes: Sequence[NodeView]) -> list[float]:
        values: list[float | None] = [None] * len(nodes)
        rest: list[int] = []
        for i, node in enumerate(nodes):
            if self.uses_reward(node):
                values[i] = self._reward_value(i, node.reward)  # type: ignore[arg-type]
            else:
                rest.append(i)
        if rest:  # one batched call for every node without a usable reward
            for i, v in zip(rest, self.fallback([nodes[i] for i in rest])):
                values[i] = v
        return values  # type: ignore[return-value]

    def _reward_value(self, i: int, reward: float) -> float:
        lo, hi = self.config.reward_range
        if not (isinstance(reward, (int, float)) and math.isfinite(reward) and lo <= reward <= hi):
            raise CriticError(f"critic 'verifier' got reward {reward!r} at node {i}; expected a number in [{lo}, {hi}] "
                              "(set VerifierConfig.reward_range for other reward scales)")
        return (reward - lo) / (hi - lo)

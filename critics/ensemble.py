"""Weighted average of several critics (AlphaLLM's value + process + outcome trio)."""

from __future__ import annotations

import math
from typing import Any, Sequence

from mcts_agent.critic import Critic, NodeView
from mcts_agent.errors import ConfigError


class EnsembleCritic(Critic):
    """``sum(w_i * v_i) / sum(w_i)``; each member with a positive weight is called once per batch.

    Members with weight 0 are skipped (not called). ``last_scores`` keeps every
    member's values of the last batch under a unique key (its name, suffixed
    ``#2``, ``#3``... on repeats), e.g. for ``Node.critic_scores``.
    """

    name = "ensemble"

    def __init__(self, members: Sequence[tuple[Critic, float]]) -> None:
        members = list(members)
        if not members:
            raise ConfigError("EnsembleCritic needs at least one (critic, weight) member, got none")
        keys: list[str] = []
        for i, member in enumerate(members):
            if not (isinstance(member, tuple) and len(member) == 2 and isinstance(member[0], Critic)):
                raise ConfigError(f"EnsembleCritic member {i} must be a (Critic, weight) pair, got {member!r}")
            critic, w = member
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ConfigError(f"EnsembleCritic weight of member {i} ({critic.name!r}) must be a finite number >= 0, got {w!r}")
            key, n = critic.name, 2
            while key in keys:
                key, n = f"{critic.name}#{n}", n + 1
            keys.append(key)
        total = sum(w for _, w in members)
        if total <= 0:
            raise ConfigError(f"EnsembleCritic weights must sum to more than 0, got {[w for _, w in members]}")
        self.members = [(c, float(w)) for c, w in members]
        self.keys = keys
        self.total = float(total)
        self.last_scores: dict[str, list[float]] = {}

    def use_executor(self, executor: Any) -> None:
        """Lend ``executor`` to every member."""
        for critic, _ in self.members:
            critic.use_executor(executor)

    def evaluate(self, nodes: Sequence[NodeView]) -> list[float]:
        out = [0.0] * len(nodes)
        self.last_scores = {}
        for key, (critic, w) in zip(self.keys, self.members):
            if w == 0:
                continue
            values = critic(nodes)  # Critic.__call__ checks count and finiteness
            self.last_scores[key] = values
            for i, v in enumerate(values):
                out[i] += w * v
        return [v / self.total for v in out]

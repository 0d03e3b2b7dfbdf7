"""The seam between the batched driver and each search algorithm.

Every round the driver asks each live tree's strategy for ``Pending`` requests, sends
ALL of them to the policy in one call, turns the completions into nodes, scores ALL
new nodes with the critic in one call, then hands each strategy its results.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable

from mcts_agent.env import SearchEnv
from mcts_agent.llm.types import GenerationRequest
from mcts_agent.search.config import SearchConfig
from mcts_agent.search.expand import SearchState
from mcts_agent.tree import Node


@dataclass
class Pending:
    """A request a strategy wants answered, and where its results go."""

    node_id: int
    request: GenerationRequest
    chain: bool = False  # a full solution to replay from the root, not one step
    path: list[int] = field(default_factory=list)  # MCTS: the selected path (virtual loss to undo)


class Strategy(abc.ABC):
    """One search algorithm, driven in rounds over many trees at once."""

    def __init__(self, config: SearchConfig, env: SearchEnv) -> None:
        self.config = config
        self.env = env

    @abc.abstractmethod
    def requests(self, st: SearchState, prompt_of: Callable[[Node], str]) -> list[Pending]:
        """What to generate for this tree this round (empty: nothing left to do)."""

    @abc.abstractmethod
    def update(self, st: SearchState, pending: Pending, new_nodes: list[Node]) -> None:
        """Absorb the scored nodes that ``pending`` produced."""

    def needs_value(self, node: Node) -> bool:
        """Whether the critic should score this new node (truncated ones are never scored)."""
        return True

    @abc.abstractmethod
    def select_answer(self, st: SearchState) -> Node | None:
        """The node whose answer is the tree's final answer."""

    def step_request(self, prompt: str, n: int, seed: int) -> GenerationRequest:
        c = self.config
        return GenerationRequest(prompt=prompt, n=n, max_tokens=c.max_step_tokens, temperature=c.temperature,
                                 top_p=c.top_p, stop=tuple(self.env.action_stop), seed=seed)

    def chain_request(self, prompt: str, n: int, seed: int, greedy: bool = False) -> GenerationRequest:
        c = self.config
        return GenerationRequest(prompt=prompt, n=n, max_tokens=c.max_solution_tokens,
                                 temperature=0.0 if greedy else c.temperature, top_p=1.0 if greedy else c.top_p,
                                 seed=seed)

"""Monte Carlo tree search over reasoning steps (PUCT or UCT, with virtual loss).

Each simulation selects a leaf, samples ``branching`` candidate next steps for it in the
shared batch, scores every new child with the critic, and backs each child's value up
to the root (so a node's Q is the mean critic value over its evaluated subtree).
Re-selecting a finished (answered or truncated) leaf backs its value up again, which
is how visits concentrate on good answers. With progressive widening on
(``SearchConfig.widening > 0``) a node that already has children is sampled again
while ``children < widening * visits ** widening_alpha``, so a tree whose leaves are all
finished (one-step tasks) keeps turning budget into new candidates instead of stopping.
"""

from __future__ import annotations

import math
import zlib
from typing import Callable, Collection

from mcts_agent.search import answer
from mcts_agent.search.config import Selection
from mcts_agent.search.expand import SearchState
from mcts_agent.search.strategy import Pending, Strategy
from mcts_agent.tree import Node, Tree


def request_seed(seed: int, task_id: str, node_id: int, visit: int) -> int:
    """A seed that depends only on the run seed and the node, not on batch composition."""
    return zlib.crc32(f"{seed}:{task_id}:{node_id}:{visit}".encode()) & 0x7FFFFFFF


class MCTS(Strategy):
    def requests(self, st: SearchState, prompt_of: Callable[[Node], str]) -> list[Pending]:
        out: list[Pending] = []
        expanding: set[int] = st.scratch.setdefault("expanding", set())  # nodes whose samples are in flight
        expansions: dict[int, int] = st.scratch.setdefault("expansions", {})  # per node: requests sent so far
        tries = 0
        while len(out) < self.config.leaves_per_tree and st.simulations + len(out) < self.config.simulations:
            tries += 1
            if tries > 4 * self.config.leaves_per_tree + 4:
                break
            path = self.select_path(st.tree, expanding)
            if path is None:
                break  # every leaf is in flight or the tree is fully explored
            leaf = st.tree.nodes[path[-1]]
            if leaf.done:  # an answered/truncated leaf: back its value up again, no model call
                self.backup(st.tree, path, leaf.value if leaf.value is not None else 0.0)
                st.simulations += 1
                continue
            for nid in path:
                st.tree.nodes[nid].virtual_loss += 1
            expanding.add(leaf.id)
            seed = request_seed(self.config.seed, st.task.id, leaf.id, expansions.get(leaf.id, 0))
            expansions[leaf.id] = expansions.get(leaf.id, 0) + 1
            out.append(Pending(node_id=leaf.id, path=path,
                               request=self.step_request(prompt_of(leaf), self.config.branching, seed)))
        if not out and not expanding and not self.expandable(st.tree):
            st.finished = True
        return out

    def update(self, st: SearchState, pending: Pending, new_nodes: list[Node]) -> None:
        tree = st.tree
        for nid in pending.path:
            tree.nodes[nid].virtual_loss -= 1
        st.scratch["expanding"].discard(pending.node_id)
        leaf = tree.nodes[pending.node_id]
        if not leaf.children:  # no usable step came back: a dead end
            leaf.truncated = True
            leaf.value = 0.0
            self.backup(tree, pending.path, 0.0)
        elif not new_nodes:  # a widening that only repeated known children: count the visit
            self.backup(tree, pending.path, leaf.q)
        for child in new_nodes:
            self.backup(tree, pending.path + [child.id], child.value if child.value is not None else 0.0)
        st.simulations += 1

    def select_answer(self, st: SearchState) -> Node | None:
        return answer.select(st.tree, self.config.answer_rule, getattr(self.env, "answer_key", str.strip))

    # ----- selection and backup --------------------------------------------------------
    def select_path(self, tree: Tree, expanding: Collection[int] = ()) -> list[int] | None:
        """Descend by the selection rule to a leaf, or to a node due for widening.

        None if the node it ends at is already being expanded.
        """
        node = tree.root
        path = [node.id]
        while node.children and not (self.widenable(node) and node.id not in expanding):
            node = max((tree.nodes[c] for c in node.children), key=lambda ch: self.score(node, ch))
            path.append(node.id)
        if node.id in expanding:
            return None
        return path

    def widenable(self, node: Node) -> bool:
        """Whether progressive widening lets ``node`` (which has children) be sampled again."""
        c = self.config
        return (c.widening > 0 and bool(node.children) and not node.done
                and len(node.children) < c.widening * max(1, node.visits) ** c.widening_alpha)

    def score(self, parent: Node, child: Node) -> float:
        vl = self.config.virtual_loss * child.virtual_loss
        n = child.visits + vl
        q = child.value_sum / n if n else 0.0  # virtual visits count as losses (value 0)
        n_parent = parent.visits + self.config.virtual_loss * parent.virtual_loss
        if self.config.selection is Selection.UCT:
            if n == 0:
                return math.inf
            return q + self.config.c_puct * math.sqrt(math.log(max(1.0, n_parent)) / n)
        return q + self.config.c_puct * child.prior * math.sqrt(max(1.0, n_parent)) / (1 + n)

    @staticmethod
    def backup(tree: Tree, path: list[int], value: float) -> None:
        for nid in path:
            n = tree.nodes[nid]
            n.visits += 1
            n.value_sum += value

    def expandable(self, tree: Tree) -> bool:
        return any((not n.children and not n.done) or self.widenable(n) for n in tree.nodes)

"""Baselines on the same tree structure and batched driver as MCTS.

Greedy, best-of-N and self-consistency sample whole solutions (one request per task,
``n`` samples sharing the prompt pass) and replay them as paths of steps. In turn-based
envs (the world answers each action) a solution cannot be sampled in one go: they roll
out action by action instead (``n`` first actions from the root, then one action per
rollout per round). Beam search expands step by step and keeps the ``beam_width``
best-scored states per depth.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from mcts_agent.search import answer
from mcts_agent.search.config import AnswerRule
from mcts_agent.search.expand import SearchState
from mcts_agent.search.mcts import request_seed
from mcts_agent.search.strategy import Pending, Strategy
from mcts_agent.tree import Node


class _Chains(Strategy):
    """Sample ``n`` full solutions once, then pick an answer."""

    greedy = False
    scored = False  # whether answered chains are scored by the critic (best-of-N only)

    def needs_value(self, node: Node) -> bool:
        return self.scored and node.terminal

    def samples(self) -> int:
        return self.config.samples

    def requests(self, st: SearchState, prompt_of: Callable[[Node], str]) -> list[Pending]:
        if self.env.turn_based:
            return self._rollout_requests(st, prompt_of)
        if st.scratch.get("sampled"):
            st.finished = True
            return []
        st.scratch["sampled"] = True
        seed = request_seed(self.config.seed, st.task.id, 0, 0)
        req = self.chain_request(prompt_of(st.tree.root), self.samples(), seed, greedy=self.greedy)
        return [Pending(node_id=0, request=req, chain=True)]

    def _rollout_requests(self, st: SearchState, prompt_of: Callable[[Node], str]) -> list[Pending]:
        frontier: list[int] = st.scratch.setdefault("frontier", [0])
        live = [nid for nid in frontier if not st.tree.nodes[nid].done]
        st.scratch["frontier"] = []
        if not live:
            st.finished = True
            return []
        out = []
        for nid in live:
            n = self.samples() if nid == 0 else 1
            seed = request_seed(self.config.seed, st.task.id, nid, 0)
            req = self.step_request(prompt_of(st.tree.nodes[nid]), n, seed)
            if self.greedy:
                req = replace(req, temperature=0.0, top_p=1.0)
            out.append(Pending(node_id=nid, request=req))
        return out

    def update(self, st: SearchState, pending: Pending, new_nodes: list[Node]) -> None:
        for n in new_nodes:  # every new node on the chains counts as visited once
            n.visits, n.value_sum = n.merged, n.merged * (n.value if n.value is not None else 0.0)
        if not self.env.turn_based:
            st.finished = True
            return
        leaf = st.tree.nodes[pending.node_id]
        if not leaf.children:  # no usable action came back: the rollout ends here
            leaf.truncated = True
        st.scratch["frontier"].extend(n.id for n in new_nodes)


class Greedy(_Chains):
    greedy = True

    def samples(self) -> int:
        return 1

    def select_answer(self, st: SearchState) -> Node | None:
        terms = st.tree.terminals()
        return terms[0] if terms else None


class SelfConsistency(_Chains):
    def select_answer(self, st: SearchState) -> Node | None:
        return answer.vote(st.tree, getattr(self.env, "answer_key", str.strip))


class BestOfN(_Chains):
    scored = True

    def select_answer(self, st: SearchState) -> Node | None:
        return answer.select(st.tree, AnswerRule.Q)


class Beam(Strategy):
    """Step-level beam search: expand every state in the beam, keep the best by critic value."""

    def requests(self, st: SearchState, prompt_of: Callable[[Node], str]) -> list[Pending]:
        beam: list[int] = st.scratch.setdefault("beam", [0])
        live = [nid for nid in beam if not st.tree.nodes[nid].done]
        if not live:
            st.finished = True
            return []
        st.scratch["children"] = []
        st.scratch["expected"] = len(live)
        return [Pending(node_id=nid, request=self.step_request(
            prompt_of(st.tree.nodes[nid]), self.config.branching,
            request_seed(self.config.seed, st.task.id, nid, 0))) for nid in live]

    def update(self, st: SearchState, pending: Pending, new_nodes: list[Node]) -> None:
        for n in new_nodes:
            n.visits, n.value_sum = 1, (n.value if n.value is not None else 0.0)
        st.scratch["children"].extend(n.id for n in new_nodes)
        st.scratch["expected"] -= 1
        if st.scratch["expected"] == 0:  # the whole depth is scored: keep the best states
            kids = sorted(st.scratch["children"], key=lambda i: (-(st.tree.nodes[i].value or 0.0), i))
            st.scratch["beam"] = kids[: self.config.beam_width]
        st.simulations += 1

    def select_answer(self, st: SearchState) -> Node | None:
        return answer.best_terminal(st.tree)

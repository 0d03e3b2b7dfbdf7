"""Turning completions into tree nodes, shared by every algorithm.

A round's samples become nodes in three passes: ``plan_children`` turns each
completion into an action and merges identical siblings (already in the tree or
earlier in the same batch); the driver steps every new (state, action) pair in ONE
batched executor call; ``attach_children`` adds the nodes in sample order. A sample
cut by ``max_tokens``, or (in reasoning envs) ended by the model without an answer,
is kept as a ``truncated`` node: it is not a finished step and is never expanded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from mcts_agent.critic import NodeView
from mcts_agent.env import EnvState, SearchEnv, Task, Transition
from mcts_agent.executor import SKIPPED
from mcts_agent.llm.types import Completion, Evaluation, FinishReason, valid_text
from mcts_agent.tree import Node, Tree


@dataclass
class SearchState:
    """One task's search in flight."""

    index: int  # position of the task in the caller's list
    task: Task  # the task as search sees it (gold stripped in evaluation)
    tree: Tree
    started: float
    deadline: float | None = None  # perf_counter time at which the time budget is spent
    tokens: int = 0
    simulations: int = 0
    model_calls: int = 0
    critic_calls: int = 0
    finished: bool = False
    scratch: dict = field(default_factory=dict)  # per-algorithm state (beam frontier, ...)


def clean_step(text: str) -> str:
    """Drop surrounding newlines and trailing spaces; keep indentation (code steps need it)."""
    return text.strip("\r\n").rstrip()


def step_key(text: str) -> str:
    """What makes two sibling steps identical."""
    return " ".join(text.split())


def action_text(env: SearchEnv, c: Completion) -> str:
    """The action a completion proposes: its text, plus the stop string where the env keeps it."""
    text = c.text + (c.stop_reason or "") if env.keep_stop else c.text
    return clean_step(valid_text(text))


@dataclass
class Candidate:
    """A new child to be: its parent, its action, and the node attributes it will carry."""

    parent: Node
    action: str
    attrs: dict[str, Any]
    flags: Completion | None = None  # the sample, for its finish reason
    merged: int = 1
    extra_tokens: int = 0

    @property
    def cut(self) -> bool:
        """The sample was cut by ``max_tokens``: not a finished action."""
        return self.flags is not None and self.flags.finish_reason is FinishReason.LENGTH


def find_sibling(tree: Tree, parent: Node, key: str) -> Node | None:
    for cid in parent.children:
        if step_key(tree.nodes[cid].action) == key:
            return tree.nodes[cid]
    return None


def plan_children(env: SearchEnv, st: SearchState, parent: Node, completions: Sequence[Completion], *,
                  merge: bool, seconds: float, planned: dict[tuple[int, int, str], Candidate]) -> list[Candidate]:
    """New children for ``parent`` from its samples; duplicates merge into a sibling or an earlier candidate.

    ``planned`` holds this round's candidates by (tree, parent, step key) so identical samples
    in one batch become one node.
    """
    new: list[Candidate] = []
    share = seconds / max(1, len(completions))
    for c in completions:
        st.tokens += len(c.token_ids)
        text = action_text(env, c)
        if not text.strip():
            continue  # an empty step says nothing: dropped, its tokens still counted
        if merge:
            key = (st.index, parent.id, step_key(text))
            sibling = find_sibling(st.tree, parent, key[2])
            if sibling is not None:
                sibling.merged += 1
                sibling.tokens += len(c.token_ids)
                continue
            if key in planned:
                planned[key].merged += 1
                planned[key].extra_tokens += len(c.token_ids)
                continue
        cand = Candidate(parent, text, dict(token_ids=list(c.token_ids), logprob=c.cumulative_logprob,
                                                finish_reason=c.finish_reason.value, tokens=len(c.token_ids),
                                                seconds=share), flags=c)
        if merge:
            planned[key] = cand
        new.append(cand)
    return new


def attach_children(env: SearchEnv, st: SearchState, parent: Node, cands: Sequence[Candidate],
                    results: Sequence[Transition | Any]) -> list[Node]:
    """Add the stepped candidates under ``parent`` (skipped ones are dropped); set priors."""
    new: list[Node] = []
    for cand, res in zip(cands, results):
        if res is SKIPPED:
            continue
        node = add_node(st.tree, parent, cand.action, res, merged=cand.merged, **cand.attrs)
        node.tokens += cand.extra_tokens
        c = cand.flags
        if c is not None and not node.terminal:
            ended = c.finish_reason is FinishReason.STOP and c.stop_reason is None  # the model stopped (EOS)
            if cand.cut or (ended and not env.turn_based):
                node.truncated = True
        new.append(node)
    set_priors(st.tree, parent)
    return new


def add_node(tree: Tree, parent: Node, action: str, result: Transition, **attrs: Any) -> Node:
    state, reward, term, trunc, info = result
    observation = state.turns[-1].observation if state.turns else None
    observation = valid_text(observation) if observation is not None else None
    return tree.add_child(parent.id, action=action, state=state, reward=reward, terminal=term, truncated=trunc,
                          answer=info.get("answer"), observation=observation, **attrs)


def set_priors(tree: Tree, parent: Node) -> None:
    """Priors ∝ merged count × exp(mean token logprob): a softmax over siblings."""
    kids = [tree.nodes[c] for c in parent.children]
    if not kids:
        return
    scores = [k.logprob / max(1, len(k.token_ids)) + math.log(k.merged) for k in kids]
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    for k, w in zip(kids, weights):
        k.prior = w / total


# ----- whole solutions (reasoning envs): replayed as paths of steps ------------------------

def chain_parts(env: SearchEnv, completion: Completion) -> list[str]:
    parts = [clean_step(p) for p in valid_text(completion.text).split(env.step_delimiter)]
    return [p for p in parts if p.strip()] or [""]


def replay_chain(env: SearchEnv, job: tuple[EnvState, list[str]]) -> list[Transition]:
    """Step a solution's parts from ``state`` until the episode ends (an executor job)."""
    state, parts = job
    out: list[Transition] = []
    for part in parts:
        res = env.transition(state, part)
        out.append(res)
        state = res[0]
        if res[2] or res[3]:
            break
    return out


def attach_chain(env: SearchEnv, st: SearchState, completion: Completion, parts: list[str],
                 results: list[Transition] | Any, *, merge: bool, seconds: float) -> Node | None:
    """Add a replayed solution as a path from the root, merging shared prefixes; return its last node."""
    if results is SKIPPED:
        st.tokens += len(completion.token_ids)
        return None
    tree = st.tree
    st.tokens += len(completion.token_ids)
    node = tree.root
    total_chars = max(1, sum(len(p) for p in parts))
    exact = True  # False once the path runs through a merged sibling with different text
    for i, part in enumerate(parts):
        frac = len(part) / total_chars
        tokens = round(frac * len(completion.token_ids))
        sibling = find_sibling(tree, node, step_key(part)) if merge else None
        if sibling is not None:
            sibling.merged += 1
            sibling.tokens += tokens
            exact = exact and sibling.action == part
            node = sibling
        else:
            if exact and i < len(results):
                res = results[i]
            else:
                res = env.transition(node.state, part)
                exact = False
            node = add_node(tree, node, part, res, tokens=tokens, seconds=seconds * frac,
                            finish_reason=FinishReason.STOP.value)
        if node.done:
            return node
    node.truncated = True
    node.finish_reason = completion.finish_reason.value
    return node


def node_view(node: Node, prompt: str, question: str, evaluation: Evaluation | None = None) -> NodeView:
    state: EnvState = node.state
    return NodeView(prompt=prompt, question=question, steps=state.steps, answer=node.answer,
                    terminal=node.terminal, reward=node.reward, state=state, evaluation=evaluation)


"""Turning completions into tree nodes, shared by every algorithm.

A step sample becomes a child of the node it was sampled from; identical siblings are
merged; a sample cut by ``max_tokens`` or ended by the model without an answer is kept
as a ``truncated`` node (it is not a finished step and is never expanded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from critics.base import NodeView
from envs.base import EnvState, Task, TextEnv
from mcts_agent.llm.types import Completion, FinishReason
from mcts_agent.tree import Node, Tree


@dataclass
class SearchState:
    """One task's search in flight."""

    index: int  # position of the task in the caller's list
    task: Task  # the task as search sees it (gold stripped in evaluation)
    tree: Tree
    started: float
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


def add_step(env: TextEnv, tree: Tree, parent: Node, text: str, *, merge: bool, **attrs: object) -> tuple[Node, bool]:
    """Add the step ``text`` under ``parent`` (or merge into an identical sibling).

    Returns the node and whether it is new.
    """
    text = clean_step(text)
    if merge:
        key = step_key(text)
        for cid in parent.children:
            child = tree.nodes[cid]
            if step_key(child.action) == key:
                child.merged += 1
                return child, False
    state, reward, term, trunc, info = env.transition(parent.state, text)
    node = tree.add_child(parent.id, action=text, state=state, reward=reward, terminal=term,
                          truncated=trunc, answer=info.get("answer"), **attrs)
    return node, True


def add_step_children(env: TextEnv, st: SearchState, parent: Node, completions: Sequence[Completion],
                      *, merge: bool, seconds: float) -> list[Node]:
    """Add one child per distinct usable step sample; set PUCT priors over all children."""
    new: list[Node] = []
    share = seconds / max(1, len(completions))
    for c in completions:
        st.tokens += len(c.token_ids)
        text = clean_step(c.text)
        if not text.strip():
            continue  # an empty step says nothing: dropped, its tokens still counted
        node, is_new = add_step(env, st.tree, parent, text, merge=merge, token_ids=list(c.token_ids),
                                logprob=c.cumulative_logprob, finish_reason=c.finish_reason.value,
                                tokens=len(c.token_ids), seconds=share)
        if not is_new:
            node.tokens += len(c.token_ids)
            continue
        cut = c.finish_reason is FinishReason.LENGTH
        ended = c.finish_reason is FinishReason.STOP and c.stop_reason is None  # the model stopped (EOS)
        if not node.terminal and (cut or ended):
            node.truncated = True
        new.append(node)
    set_priors(st.tree, parent)
    return new


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


def add_chain(env: TextEnv, st: SearchState, completion: Completion, *, merge: bool, seconds: float) -> Node:
    """Replay a full solution as a path of steps from the root; return its last node."""
    tree = st.tree
    text = completion.text
    parts = [clean_step(p) for p in text.split(env.step_delimiter)]
    parts = [p for p in parts if p.strip()]
    st.tokens += len(completion.token_ids)
    node = tree.root
    total_chars = max(1, sum(len(p) for p in parts))
    for part in parts:
        frac = len(part) / total_chars
        node, is_new = add_step(env, tree, node, part, merge=merge,
                                tokens=round(frac * len(completion.token_ids)), seconds=seconds * frac,
                                finish_reason=FinishReason.STOP.value)
        if not is_new:
            node.tokens += round(frac * len(completion.token_ids))
        if node.done:
            return node
    if node is tree.root or not node.done:
        if node is tree.root:  # nothing usable was generated: record an empty, truncated step
            node, _ = add_step(env, tree, node, "", merge=merge, finish_reason=completion.finish_reason.value)
        node.truncated = True
        node.finish_reason = completion.finish_reason.value
    return node


def node_view(env: TextEnv, format_chat, node: Node, question: str) -> NodeView:  # type: ignore[no-untyped-def]
    state: EnvState = node.state
    return NodeView(prompt=env.policy_prompt(state, format_chat), question=question, steps=state.steps,
                    answer=node.answer, terminal=node.terminal, reward=node.reward, state=state)

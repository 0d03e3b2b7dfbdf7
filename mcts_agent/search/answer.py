"""Final-answer selection over a finished tree."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

from mcts_agent.search.config import AnswerRule
from mcts_agent.tree import Node, Tree


def _value(n: Node) -> float:
    return n.q if n.visits else (n.value if n.value is not None else 0.0)


def best_terminal(tree: Tree) -> Node | None:
    """The answered node with the highest value (Q if visited, else its critic value)."""
    terms = [n for n in tree.nodes if n.terminal]
    return max(terms, key=lambda n: (_value(n), n.visits, -n.id)) if terms else None


def most_visited_path(tree: Tree) -> Node | None:
    """Follow the most visited child from the root; the answered node it ends at, if any."""
    node = tree.root
    while node.children:
        node = max((tree.nodes[c] for c in node.children), key=lambda n: (n.visits, _value(n), -n.id))
    return node if node.terminal else None


def vote(tree: Tree, key: Callable[[str], str] = lambda a: a.strip()) -> Node | None:
    """Majority vote over answered nodes (each counted by its merged samples); ties by summed value."""
    groups: dict[str, list[Node]] = defaultdict(list)
    for n in tree.nodes:
        if n.terminal and n.answer is not None:
            groups[key(n.answer)].append(n)
    if not groups:
        return None
    best = max(groups.values(), key=lambda g: (sum(n.merged for n in g), sum(_value(n) for n in g)))
    return max(best, key=lambda n: (_value(n), -n.id))


def select(tree: Tree, rule: AnswerRule, key: Callable[[str], str] = lambda a: a.strip()) -> Node | None:
    """Apply ``rule``; fall back to the best answered node when the rule finds none."""
    if rule is AnswerRule.VISITS:
        node = most_visited_path(tree)
    elif rule is AnswerRule.VOTE:
        node = vote(tree, key)
    else:
        node = None
    return node or best_terminal(tree)

"""Statistics of search trees, per tree and over a whole run, as plain JSON-ready dicts."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable

from mcts_agent.tree import Tree


def tree_stats(tree: Tree) -> dict[str, Any]:
    """Shape and cost of one tree.

    Keys: ids and answer, ``correct`` (``tree.meta["correct"]`` if it is a bool, else None),
    node/leaf/terminal/truncated counts, ``max_depth``, ``depth_histogram`` (depth -> nodes),
    branching factor over expanded nodes (mean/max and ``branching_histogram``),
    ``distinct_answers`` and ``answer_counts`` over terminal nodes, ``root_visits``,
    ``node_tokens`` (sum of per-node tokens) and ``stats`` (the tree's own cost record:
    model calls, generated tokens, seconds, ...).
    """
    depth = Counter(n.depth for n in tree.nodes)
    branching = Counter(len(n.children) for n in tree.nodes if n.children)
    expanded = sum(branching.values())
    answers = Counter(n.answer for n in tree.nodes if n.terminal and n.answer is not None)
    correct = tree.meta.get("correct")
    return {
        "tree_id": tree.tree_id,
        "task_id": tree.task_id,
        "algo": tree.algo,
        "answer": tree.answer,
        "correct": correct if isinstance(correct, bool) else None,
        "nodes": len(tree.nodes),
        "leaves": len(tree.nodes) - expanded,
        "expanded": expanded,
        "terminals": sum(1 for n in tree.nodes if n.terminal),
        "truncated": sum(1 for n in tree.nodes if n.truncated),
        "max_depth": max(depth),
        "depth_histogram": {d: depth[d] for d in sorted(depth)},
        "branching_mean": (len(tree.nodes) - 1) / expanded if expanded else 0.0,
        "branching_max": max(branching, default=0),
        "branching_histogram": {b: branching[b] for b in sorted(branching)},
        "distinct_answers": len(answers),
        "answer_counts": dict(answers.most_common()),
        "root_visits": tree.root.visits,
        "node_tokens": sum(n.tokens for n in tree.nodes),
        "stats": dict(tree.stats),
    }


def aggregate_stats(trees: Iterable[Tree], per_tree: bool = False) -> dict[str, Any]:
    """Statistics over many trees; with ``per_tree`` the list of :func:`tree_stats` is included.

    ``accuracy`` is ``correct / correct_known`` over trees whose ``meta["correct"]`` is a bool
    (None when no tree says). Numeric ``tree.stats`` entries are summed under ``stats``.
    """
    rows = [tree_stats(t) for t in trees]
    depth: Counter[int] = Counter()
    branching: Counter[int] = Counter()
    totals: dict[str, float] = {}
    for r in rows:
        depth.update(r["depth_histogram"])
        branching.update(r["branching_histogram"])
        for k, v in r["stats"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                totals[k] = totals.get(k, 0) + v
    known = [r["correct"] for r in rows if r["correct"] is not None]
    nodes = sum(r["nodes"] for r in rows)
    expanded = sum(r["expanded"] for r in rows)
    out: dict[str, Any] = {
        "trees": len(rows),
        "nodes": nodes,
        "nodes_mean": nodes / len(rows) if rows else 0.0,
        "nodes_max": max((r["nodes"] for r in rows), default=0),
        "max_depth": max((r["max_depth"] for r in rows), default=0),
        "depth_histogram": {d: depth[d] for d in sorted(depth)},
        "branching_mean": (nodes - len(rows)) / expanded if expanded else 0.0,
        "branching_histogram": {b: branching[b] for b in sorted(branching)},
        "terminals": sum(r["terminals"] for r in rows),
        "truncated": sum(r["truncated"] for r in rows),
        "answered": sum(1 for r in rows if r["answer"] is not None),
        "distinct_answers_mean": sum(r["distinct_answers"] for r in rows) / len(rows) if rows else 0.0,
        "correct": sum(known),
        "correct_known": len(known),
        "accuracy": sum(known) / len(known) if known else None,
        "node_tokens": sum(r["node_tokens"] for r in rows),
        "stats": totals,
    }
    if per_tree:
        out["per_tree"] = rows
    return out

"""A self-contained, offline HTML viewer for search trees.

One file, no network: the page's JS and CSS are inline (``viewer_template.html``) and the
trees are embedded as JSON in a ``<script type="application/json">`` tag, with every ``<``
written as ``\\u003c`` so no step text can close the tag. The page shows, per tree, a header
(question, chosen answer, ``meta["gold"]``), a legend, a node-link drawing (inline SVG: radius
by visits, fill by value or correctness; at most 2,000 nodes, the page says when it is
truncated), the node list (children rendered only when a node is expanded, so trees with
100k nodes open quickly), a search box and a detail panel with the node's full texts and
the prompt the policy continued there (rebuilt from the ``context`` deltas, as
``Tree.prompt`` does; embedded only when the tree recorded prompts).

URL options: ``?tree=ID`` (tree id, task id or index), ``?expand=path`` (the default: the
answer path open) or ``?expand=N`` (N levels open, 0: collapsed), ``?node=ID`` (select a
node), ``?q=TEXT`` (search), ``?color=correct`` (colour the drawing by correctness),
``?cap=N`` (draw at most N nodes), ``?selftest=1`` (a self-check of the page through its own
handlers, result in the page title).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from importlib import resources
from typing import Any, Iterable

from mcts_agent.export.analysis import aggregate_stats, tree_stats
from mcts_agent.io import atomic_open, json_safe
from mcts_agent.tree import Tree

# Node columns the page uses (token ids are left out: they are large and not shown).
_VIEW_COLUMNS = ("parent", "depth", "action", "logprob", "prior", "visits", "value_sum", "value", "critic_scores",
                 "reward", "terminal", "truncated", "answer", "finish_reason", "merged", "tokens", "seconds", "children",
                 "observation")
_MIN_SHARED = 32  # a context holding a text the page has already (question, observation) this long refers to it
_ROUNDED = {"logprob", "prior", "value_sum", "value", "reward", "seconds"}
_PLACEHOLDER = re.compile(r"\{\{(TITLE|DATA)\}\}")


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 5) if math.isfinite(v) else None
    return v


def tree_view_data(tree: Tree) -> dict[str, Any]:
    """The JSON the page reads for one tree: header, summary statistics, node columns.

    The prompt columns (``context``, ``context_full``) are left out when the tree recorded no prompt.
    """
    cols: dict[str, list[Any]] = {}
    for c in _VIEW_COLUMNS:
        values = [getattr(n, c) for n in tree.nodes]
        if c in _ROUNDED:
            values = [_round(v) for v in values]
        elif c == "critic_scores":
            values = [json_safe({k: _round(x) for k, x in v.items()}) if v else {} for v in values]
        elif c == "finish_reason":
            values = [getattr(v, "value", v) for v in values]
        cols[c] = values
    if any(n.context is not None for n in tree.nodes):
        cols.update(_prompt_columns(tree))
    summary = tree_stats(tree)
    return {
        "tree_id": tree.tree_id, "task_id": tree.task_id, "question": tree.question, "algo": tree.algo,
        "env_id": tree.env_id, "answer": json_safe(tree.answer),
        "answer_node": tree.answer_node if tree.answer_node is not None and 0 <= tree.answer_node < len(tree) else None,
        "meta": json_safe(tree.meta), "stats": json_safe(tree.stats),
        "summary": {k: summary[k] for k in ("nodes", "max_depth", "terminals", "distinct_answers")},
        "nodes": cols,
    }


def _prompt_columns(tree: Tree) -> dict[str, list[Any]]:
    """The prompt deltas (see ``Tree.prompt``), each text once: a delta that contains the root's question
    or the node's observation (held in other columns) is stored as ``[before, after]`` around it."""
    context: list[Any] = []
    for n in tree.nodes:
        shared = tree.question if n.parent is None else n.observation
        c: Any = n.context
        if c is not None and shared and len(shared) >= _MIN_SHARED and shared in c:
            i = c.index(shared)
            c = [c[:i], c[i + len(shared):]]
        context.append(c)
    return {"context": context, "context_full": [n.context_full for n in tree.nodes]}


def default_title(trees: list[Tree]) -> str:
    """A page title that names the environments and the tree count, e.g. ``mcts-agent trees: gsm8k (30 trees)``."""
    envs = list(dict.fromkeys(env for t in trees if (env := str(t.meta.get("env_id") or t.env_id or ""))))
    named = ", ".join(envs[:3]) + (f" +{len(envs) - 3} more" if len(envs) > 3 else "")
    count = f"{len(trees)} tree{'' if len(trees) == 1 else 's'}"
    return f"mcts-agent trees: {named} ({count})" if named else f"mcts-agent trees ({count})"


def render_viewer(trees: Iterable[Tree], title: str | None = None) -> str:
    """The viewer page as a string; ``title`` defaults to :func:`default_title`."""
    trees = list(trees)
    title = title or default_title(trees)
    agg = aggregate_stats(trees)
    summary = f"{agg['nodes']:,} nodes"
    if agg["correct_known"]:
        summary += f" · {agg['correct']}/{agg['correct_known']} correct"
    data = {"title": title, "summary": summary, "trees": [tree_view_data(t) for t in trees]}
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=json_safe)
    # JSON only has "<" inside strings, where \u003c means the same; the tag can never be closed.
    payload = payload.replace("<", "\\u003c")
    template = resources.files("mcts_agent.export").joinpath("viewer_template.html").read_text(encoding="utf-8")
    parts = {"TITLE": html.escape(title), "DATA": payload}
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], template)


def write_viewer(trees: Iterable[Tree] | Tree, path: str | os.PathLike[str], title: str | None = None) -> None:
    """Write the offline viewer for ``trees`` to ``path`` (replaced atomically); ``title`` defaults to :func:`default_title`."""
    page = render_viewer([trees] if isinstance(trees, Tree) else trees, title=title)
    with atomic_open(path) as f:
        f.write(page)

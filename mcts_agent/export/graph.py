"""Search trees as networkx graphs and GraphML files.

Every serialized :class:`~mcts_agent.tree.Node` field becomes a node attribute. GraphML only
holds scalars, so lists and dicts (``token_ids``, ``children``, ``critic_scores``) are
stored as JSON strings, and ``None`` (or a non-finite float) leaves the attribute out, as
GraphML intends for missing data. Two derived attributes help analysis tools: ``q`` (mean
backed-up value) and ``on_answer_path``.

:func:`write_graphml` streams the XML itself (networkx's writer builds an element tree in
memory and is several times slower); the file reads back with ``networkx.read_graphml``.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
from typing import Any, Callable, Iterable, Sequence
from xml.sax.saxutils import escape, quoteattr

import networkx as nx

from mcts_agent.io import atomic_open, json_safe
from mcts_agent.tree import Node, Tree

# GraphML type of each node attribute, in output order; "json" is a JSON-encoded string.
# Keep in step with the serialized Node fields (tests/test_export.py checks).
_FIELD_TYPES: dict[str, str] = {
    "id": "int", "parent": "int", "depth": "int", "action": "string", "token_ids": "json",
    "logprob": "double", "prior": "double", "visits": "int", "value_sum": "double",
    "value": "double", "critic_scores": "json", "reward": "double", "terminal": "boolean",
    "truncated": "boolean", "answer": "string", "finish_reason": "string", "merged": "int",
    "tokens": "int", "seconds": "double", "children": "json", "observation": "string", "context": "string",
    "context_full": "boolean",
}
_DERIVED_TYPES = {"q": "double", "on_answer_path": "boolean", "tree_id": "string"}

# Tree-level attributes stored on the graph.
_TREE_ATTRS = ("tree_id", "task_id", "question", "algo", "env_id", "answer", "answer_node", "meta", "stats")


def _json(v: Any) -> str:
    if type(v) is list and all(type(x) is int for x in v):  # token ids, children: the common, hot case
        return f"[{','.join(map(str, v))}]"
    return json.dumps(json_safe(v), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _string(v: Any) -> str:
    return v.value if isinstance(v, enum.Enum) else str(v)


def _double(v: Any) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "int": int, "double": _double, "boolean": bool, "string": _string, "json": _json,
}


def answer_path_ids(tree: Tree) -> set[int]:
    """Ids of the nodes from the root to the selected answer node (empty if none)."""
    if tree.answer_node is None or not 0 <= tree.answer_node < len(tree.nodes):
        return set()
    return {n.id for n in tree.path(tree.answer_node)}


def node_attributes(node: Node, on_path: bool = False) -> dict[str, Any]:
    """GraphML-safe attributes of one node (``None`` values left out)."""
    out: dict[str, Any] = {}
    for name, kind in _FIELD_TYPES.items():
        v = getattr(node, name)
        if v is not None:
            v = _CONVERT[kind](v)
            if v is not None:
                out[name] = v
    q = _double(node.q)
    if q is not None:
        out["q"] = q
    out["on_answer_path"] = on_path
    return out


def _graph_attributes(tree: Tree) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _TREE_ATTRS:
        v = getattr(tree, name)
        if v is None:
            continue
        out[name] = _json(v) if isinstance(v, (dict, list)) else v
    return out


def tree_to_networkx(tree: Tree) -> nx.DiGraph:
    """A directed graph (parent -> child) keyed by node id, with every node field as attributes.

    Tree-level fields (task id, question, answer, ``meta`` and ``stats`` as JSON) are graph
    attributes.
    """
    g = nx.DiGraph(**_graph_attributes(tree))
    on_path = answer_path_ids(tree)
    g.add_nodes_from((n.id, node_attributes(n, n.id in on_path)) for n in tree.nodes)
    g.add_edges_from((n.parent, n.id) for n in tree.nodes if n.parent is not None)
    return g


def trees_to_networkx(trees: Sequence[Tree]) -> nx.DiGraph:
    """Several trees as one graph: node keys are ``"<tree_id>:<id>"``, each node has ``tree_id``."""
    g = nx.DiGraph(trees=_json([_graph_attributes(t) for t in trees]))
    for t in trees:
        on_path = answer_path_ids(t)
        g.add_nodes_from(
            (f"{t.tree_id}:{n.id}", {**node_attributes(n, n.id in on_path), "tree_id": t.tree_id}) for n in t.nodes
        )
        g.add_edges_from((f"{t.tree_id}:{n.parent}", f"{t.tree_id}:{n.id}") for n in t.nodes if n.parent is not None)
    return g


# ----- GraphML ------------------------------------------------------------------------------
_XML_TYPE = {"int": "long", "double": "double", "boolean": "boolean", "string": "string", "json": "string"}


def write_graphml(trees_or_tree: Tree | Iterable[Tree], path: str | os.PathLike[str]) -> None:
    """Write one tree, or several as one graph (see :func:`trees_to_networkx`), to GraphML.

    The file is replaced atomically. One tree keeps integer node ids (read back with
    ``nx.read_graphml(path, node_type=int)``); several use ``"<tree_id>:<id>"``.
    """
    single = isinstance(trees_or_tree, Tree)
    trees = [trees_or_tree] if single else list(trees_or_tree)
    for t in trees:
        if not isinstance(t, Tree):
            raise TypeError(f"write_graphml expects Tree objects, got {type(t).__name__}")
    node_types = dict(_FIELD_TYPES, **_DERIVED_TYPES)
    if single:
        del node_types["tree_id"]
        graph_attrs = _graph_attributes(trees[0])
    else:
        graph_attrs = {"trees": _json([_graph_attributes(t) for t in trees])}
    with atomic_open(path) as f:
        w = f.write
        w('<?xml version="1.0" encoding="utf-8"?>\n')
        w('<graphml xmlns="http://graphml.graphdrawing.org/xmlns" '
          'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
          'xsi:schemaLocation="http://graphml.graphdrawing.org/xmlns '
          'http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd">\n')
        gkeys = {name: f"g_{name}" for name in graph_attrs}
        for name, value in graph_attrs.items():
            w(f'  <key id="{gkeys[name]}" for="graph" attr.name="{name}" attr.type="{_scalar_type(value)}" />\n')
        nkeys = {name: f"d{i}" for i, name in enumerate(node_types)}
        for name, kind in node_types.items():
            w(f'  <key id="{nkeys[name]}" for="node" attr.name="{name}" attr.type="{_XML_TYPE[kind]}" />\n')
        w('  <graph edgedefault="directed">\n')
        for name, value in graph_attrs.items():
            w(f'    <data key="{gkeys[name]}">{_xml_value(value)}</data>\n')
        for t in trees:
            prefix = "" if single else f"{t.tree_id}:"
            on_path = answer_path_ids(t)
            for n in t.nodes:
                attrs = node_attributes(n, n.id in on_path)
                if not single:
                    attrs["tree_id"] = t.tree_id
                data = "".join(f'<data key="{nkeys[k]}">{_xml_value(v)}</data>' for k, v in attrs.items())
                w(f"    <node id={quoteattr(prefix + str(n.id))}>{data}</node>\n")
            for n in t.nodes:
                if n.parent is not None:
                    w(f"    <edge source={quoteattr(prefix + str(n.parent))} target={quoteattr(prefix + str(n.id))} />\n")
        w("  </graph>\n</graphml>\n")


def _scalar_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "long"
    if isinstance(v, float):
        return "double"
    return "string"


def _xml_value(v: Any) -> str:
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    return _xml_text(str(v))


# Characters XML 1.0 cannot carry at all (and lone surrogates, which UTF-8 cannot encode).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(s: str) -> str:
    """Escape text for XML 1.0: ``\\r`` as a character reference (parsers would turn it into
    ``\\n``), characters XML cannot carry replaced by U+FFFD."""
    if "&" in s or "<" in s or ">" in s or "\r" in s:
        s = escape(s, {"\r": "&#13;"})
    return _NOT_XML.sub("\ufffd", s) if _NOT_XML.search(s) else s

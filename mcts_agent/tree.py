"""One search-tree structure for every algorithm (MCTS, best-of-N, beam, greedy).

Nodes live in a list keyed by their id (0 is the root); ids are local to a tree, so
there are no global counters. Trees round-trip through JSON without loss and are
stored one per line in ``trees.jsonl`` (schema below, versioned).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

from mcts_agent.errors import TreeFormatError

SCHEMA = "mcts-agent/tree"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 had no observation/context columns


@dataclass(slots=True)
class Node:
    """One node: the state reached by taking ``action`` (a step of text) from ``parent``."""

    id: int
    parent: int | None
    depth: int
    action: str = ""  # the step text that led here ("" at the root)
    token_ids: list[int] = field(default_factory=list)
    logprob: float = 0.0  # summed log-probability of the step under the policy
    prior: float = 1.0  # PUCT prior among siblings
    visits: int = 0
    value_sum: float = 0.0
    value: float | None = None  # the critic's estimate at expansion (in [0, 1])
    critic_scores: dict[str, float] = field(default_factory=dict)
    reward: float | None = None  # environment reward on reaching this node
    terminal: bool = False  # the episode ended with an answer
    truncated: bool = False  # a budget (depth, step tokens) ended the episode
    answer: str | None = None
    finish_reason: str = ""  # the backend's reason for the step's end
    merged: int = 1  # identical sibling samples merged into this node
    tokens: int = 0  # generated tokens spent on this step
    seconds: float = 0.0  # wall time attributed to this node's expansion
    children: list[int] = field(default_factory=list)
    observation: str | None = None  # the world's reply to ``action`` (agent envs); None for reasoning steps
    context: str | None = None  # what the policy saw after ``action`` (root: the whole prompt); None: never expanded
    context_full: bool = False  # ``context`` is the whole prompt, not an extension of the parent's
    virtual_loss: int = 0  # in-flight selections (not serialized)
    state: Any = None  # the environment snapshot (not serialized: replay actions from the root)

    @property
    def q(self) -> float:
        """Mean backed-up value; 0 for an unvisited node."""
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def done(self) -> bool:
        return self.terminal or self.truncated


# Columns written to JSON, in order. ``virtual_loss`` and ``state`` are runtime-only.
_COLUMNS = tuple(f.name for f in fields(Node) if f.name not in ("virtual_loss", "state"))


@dataclass
class Tree:
    """A search tree for one task, plus what it cost."""

    tree_id: str
    task_id: str
    question: str
    nodes: list[Node] = field(default_factory=list)
    algo: str = ""
    env_id: str = ""
    answer: str | None = None  # the selected final answer
    answer_node: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)  # model_calls, generated_tokens, seconds, ...

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes.append(Node(id=0, parent=None, depth=0))

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def add_child(self, parent: int, **attrs: Any) -> Node:
        """Append a child of ``parent`` and return it."""
        p = self.nodes[parent]
        node = Node(id=len(self.nodes), parent=parent, depth=p.depth + 1, **attrs)
        self.nodes.append(node)
        p.children.append(node.id)
        return node

    def path(self, node_id: int) -> list[Node]:
        """Nodes from the root down to ``node_id`` inclusive."""
        out = []
        nid: int | None = node_id
        while nid is not None:
            out.append(self.nodes[nid])
            nid = self.nodes[nid].parent
        return out[::-1]

    def steps(self, node_id: int) -> list[str]:
        """The step texts along the path to ``node_id``."""
        return [n.action for n in self.path(node_id)[1:]]

    def prompt(self, node_id: int) -> str | None:
        """The exact text the policy continued when it expanded ``node_id``; None if never recorded.

        Stored as deltas: the root holds the first prompt, every other expanded node the
        text that followed its action (end of turn, observation, the next turn's header).
        """
        parts: list[str] = []
        for n in reversed(self.path(node_id)):
            if n.context is None:
                return None
            parts.append(n.context)
            if n.context_full or n.parent is None:
                break
            parts.append(n.action)
        return "".join(reversed(parts))

    def record_prompt(self, node_id: int, prompt: str) -> None:
        """Store ``prompt`` (what the policy saw at ``node_id``) as a delta from the parent's prompt."""
        node = self.nodes[node_id]
        if node.context is not None:
            return
        base = self.prompt(node.parent) if node.parent is not None else None
        if base is not None and prompt.startswith(base + node.action):
            node.context = prompt[len(base) + len(node.action):]
        else:
            node.context, node.context_full = prompt, node.parent is not None

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if not n.children]

    def terminals(self) -> list[Node]:
        return [n for n in self.nodes if n.terminal]

    # ----- serialization -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        cols: dict[str, list[Any]] = {c: [] for c in _COLUMNS}
        for n in self.nodes:
            for c in _COLUMNS:
                v = getattr(n, c)
                cols[c].append(_finite(v) if isinstance(v, (float, dict)) else v)
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "tree_id": self.tree_id,
            "task_id": self.task_id,
            "question": self.question,
            "algo": self.algo,
            "env_id": self.env_id,
            "answer": self.answer,
            "answer_node": self.answer_node,
            "meta": _finite(self.meta),
            "stats": _finite(self.stats),
            "nodes": cols,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tree":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise TreeFormatError(f"not an mcts-agent tree: expected schema {SCHEMA!r}, got {data.get('schema') if isinstance(data, dict) else type(data).__name__!r}")
        if data.get("version") not in READABLE_VERSIONS:
            raise TreeFormatError(f"unsupported tree schema version {data.get('version')!r}; this build reads "
                                  f"versions {list(READABLE_VERSIONS)}")
        try:
            cols = data["nodes"]
            count = len(cols["id"])
            if data["version"] == 1:  # columns added in version 2 take their defaults
                cols = {**{"observation": [None] * count, "context": [None] * count,
                           "context_full": [False] * count}, **cols}
            bad = [c for c in _COLUMNS if len(cols[c]) != count]
            if bad:
                raise TreeFormatError(f"tree {data.get('tree_id')!r}: node columns {bad} do not have {count} entries")
            nodes = [Node(*row) for row in zip(*(cols[c] for c in _COLUMNS))]
            tree = cls(
                tree_id=data["tree_id"], task_id=data["task_id"], question=data["question"], nodes=nodes,
                algo=data.get("algo", ""), env_id=data.get("env_id", ""), answer=data.get("answer"),
                answer_node=data.get("answer_node"), meta=data.get("meta", {}), stats=data.get("stats", {}),
            )
        except (KeyError, TypeError) as e:
            raise TreeFormatError(f"tree {data.get('tree_id')!r} is missing or has a malformed field: {e}") from e
        if cols["id"] != list(range(count)):
            raise TreeFormatError(f"tree {tree.tree_id!r}: node ids are not 0..{count - 1} in order")
        tree.check_structure()
        return tree

    def check_structure(self) -> None:
        """Refuse a malformed tree in one linear pass: the root first, every parent an earlier node
        (so there are no cycles and no dangling ids), children lists matching the parents, and an
        ``answer_node`` that exists."""
        name = f"tree {self.tree_id!r}"
        if not self.nodes or self.nodes[0].parent is not None:
            raise TreeFormatError(f"{name}: node 0 must be the root (parent null), got parent "
                                  f"{self.nodes[0].parent if self.nodes else None!r}")
        kids: list[list[int]] = [[] for _ in self.nodes]
        for n in self.nodes[1:]:
            p = n.parent
            if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p < n.id:
                raise TreeFormatError(f"{name}: node {n.id} has parent {p!r}; expected the id of an earlier node "
                                      f"(0..{n.id - 1}): parents precede their children")
            kids[p].append(n.id)
        for n, expected in zip(self.nodes, kids):
            if n.children != expected:
                raise TreeFormatError(f"{name}: node {n.id} lists children {n.children}, but the nodes whose parent "
                                      f"it is are {expected}")
        a = self.answer_node
        if a is not None and (not isinstance(a, int) or isinstance(a, bool) or not 0 <= a < len(self.nodes)):
            raise TreeFormatError(f"{name}: answer_node {a!r} is not a node id (0..{len(self.nodes) - 1})")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Tree":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise TreeFormatError(f"tree JSON is corrupted: {e}") from e
        return cls.from_dict(data)


def _finite(v: Any) -> Any:
    """JSON has no NaN/inf: store them as None (also inside dicts and lists)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v

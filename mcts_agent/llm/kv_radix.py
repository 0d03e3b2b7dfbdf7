"""A bounded radix tree of key/value states keyed by token-id prefixes (prefix reuse across calls).

In MCTS a child's prompt is its parent's prompt plus the parent's action, so most of every
prompt was already run through the model in an earlier round. The transformers backend
inserts each decoded sequence (prompt + fed generated tokens) with its per-layer KV here and,
for a new prompt, reads the KV of the longest cached prefix so only the rest is prefilled.

Matching is on token ids only: a prompt re-encoded from text may tokenize the join of
prompt and action differently from the sampled ids, and then only the longest common token
prefix is reused (the KV at a position depends only on the tokens up to it).

Each node holds one segment of tokens and its KV as one tensor ``[layers, 2, kv_heads,
tokens, head_dim]``. The bytes held never exceed ``max_bytes``: before an insert, least
recently used leaves (not on the inserted path) are evicted, and an insert that still does
not fit is truncated. A second, payload-free tree of every sequence ever seen gives the
theoretical maximum reuse (no memory bound) for the statistics.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

KVFn = Callable[[int, int], torch.Tensor]  # (start, end) -> KV of tokens [start, end) of the inserted sequence


@dataclass(eq=False)
class _Node:
    tokens: tuple[int, ...]
    kv: torch.Tensor | None  # [layers, 2, kv_heads, len(tokens), head_dim]; None in a payload-free tree
    parent: "_Node | None"
    children: dict[int, "_Node"] = field(default_factory=dict)  # keyed by the child's first token
    last_used: int = 0

    @property
    def nbytes(self) -> int:
        return 0 if self.kv is None else self.kv.numel() * self.kv.element_size()


@dataclass
class PrefixCacheStats:
    """Counters of a ``KVRadixTree``; ``max_reusable_tokens`` ignores the memory bound."""

    lookups: int = 0
    hits: int = 0  # lookups that reused at least one token
    reused_tokens: int = 0
    prompt_tokens: int = 0
    max_reusable_tokens: int = 0  # per prompt: longest prefix shared with any earlier prompt or sequence
    inserted_tokens: int = 0
    evicted_tokens: int = 0
    peak_bytes: int = 0

    @property
    def reuse_of_max(self) -> float:
        """Reused tokens as a fraction of the theoretical maximum (1.0 when nothing was reusable)."""
        return self.reused_tokens / self.max_reusable_tokens if self.max_reusable_tokens else 1.0


class KVRadixTree:
    """Token-prefix -> KV cache with a byte bound and LRU eviction of leaves.

    ``token_bytes`` is the size of one token's KV over all layers (keys and values).
    ``store=False`` keeps token ids only (no payload, no bound): used for the theoretical maximum.
    """

    def __init__(self, max_bytes: int, token_bytes: int, *, store: bool = True) -> None:
        self.max_bytes, self.token_bytes, self.store = max_bytes, token_bytes, store
        self.root = _Node((), None, None)
        self.bytes = 0
        self.stats = PrefixCacheStats()
        self._clock = 0
        self._seen = KVRadixTree(0, 0, store=False) if store else None

    # ------------------------------------------------------------------ reading

    def match(self, ids: Sequence[int], limit: int | None = None) -> tuple[int, list[tuple[torch.Tensor, int]]]:
        """Longest cached prefix of ``ids`` (at most ``limit`` tokens): its length and its KV as
        ``(node kv, tokens taken from its start)`` pieces in order. Marks the path as used."""
        limit = len(ids) if limit is None else min(limit, len(ids))
        self._clock += 1
        node, n, pieces = self.root, 0, []
        while n < limit:
            child = node.children.get(ids[n])
            if child is None:
                break
            take = _common(child.tokens, ids, n, limit)
            child.last_used = self._clock
            if child.kv is not None:
                pieces.append((child.kv, take))
            n += take
            if take < len(child.tokens):
                break
            node = child
        return n, pieces

    def lookup(self, ids: Sequence[int], limit: int | None = None) -> tuple[int, list[tuple[torch.Tensor, int]]]:
        """``match`` for a prompt about to be prefilled; counts a lookup (see ``record``)."""
        n, pieces = self.match(ids, limit)
        self.stats.lookups += 1
        self.stats.hits += n > 0
        return n, pieces

    def observe(self, ids: Sequence[int], limit: int | None = None) -> int:
        """The theoretical reuse of a prompt: its longest prefix (at most ``limit``) shared with
        any prompt or sequence seen before, ignoring the bound; then remember it as seen. A
        payload-free tree (``store=False``) is its own record of what was seen."""
        seen = self._seen if self._seen is not None else self
        n = seen.match(ids, limit)[0]
        seen.insert(ids)
        self.stats.max_reusable_tokens += n
        return n

    def record(self, prompt_tokens: int, reused: int) -> None:
        """Count one prefilled prompt and how many of its tokens came from the cache."""
        self.stats.prompt_tokens += prompt_tokens
        self.stats.reused_tokens += reused

    # ------------------------------------------------------------------ writing

    def insert(self, ids: Sequence[int], kv: KVFn | None = None) -> int:
        """Add ``ids``; ``kv(start, end)`` gives the KV of the tokens not cached yet. Returns the
        tokens added (fewer than missing when the bound is reached)."""
        if self._seen is not None:
            self._seen.insert(ids)
        self._clock += 1
        node, n, path = self.root, 0, {id(self.root)}
        while n < len(ids):
            child = node.children.get(ids[n])
            if child is None:
                break
            take = _common(child.tokens, ids, n, len(ids))
            if take < len(child.tokens):
                if n + take == len(ids):  # ``ids`` ends inside this node: all of it is cached
                    child.last_used = self._clock
                    return 0
                child = self._split(child, take)
            child.last_used = self._clock
            path.add(id(child))
            node, n = child, n + take
        missing = len(ids) - n
        if not missing:
            return 0
        if self.store:
            assert kv is not None, "a storing tree needs the KV of the inserted tokens"
            room = self._make_room(missing * self.token_bytes, path)
            missing = min(missing, room // self.token_bytes) if self.token_bytes else missing
            if missing <= 0:
                return 0
        payload = kv(n, n + missing).contiguous() if self.store else None  # type: ignore[misc]
        if payload is not None and payload.shape[3] != missing:
            raise ValueError(f"kv({n}, {n + missing}) returned {payload.shape[3]} tokens, expected {missing}")
        leaf = _Node(tuple(ids[n : n + missing]), payload, node, last_used=self._clock)
        node.children[leaf.tokens[0]] = leaf
        self.bytes += leaf.nbytes
        self.stats.inserted_tokens += missing
        self.stats.peak_bytes = max(self.stats.peak_bytes, self.bytes)
        return missing

    def clear(self) -> None:
        """Drop every cached state and reset the statistics."""
        self.__init__(self.max_bytes, self.token_bytes, store=self.store)  # type: ignore[misc]

    # ------------------------------------------------------------------ internals

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut ``node`` after ``at`` tokens; return the new upper part (the lower keeps the children)."""
        parent = node.parent
        assert parent is not None
        upper_kv = lower_kv = None
        if node.kv is not None:  # copies, so an evicted half frees its memory
            upper_kv, lower_kv = node.kv[:, :, :, :at].clone(), node.kv[:, :, :, at:].clone()
        upper = _Node(node.tokens[:at], upper_kv, parent, last_used=node.last_used)
        parent.children[upper.tokens[0]] = upper
        node.tokens, node.kv, node.parent = node.tokens[at:], lower_kv, upper
        upper.children[node.tokens[0]] = node
        return upper

    def _make_room(self, need: int, keep: set[int]) -> int:
        """Evict least recently used leaves (not in ``keep``) until ``need`` bytes fit; return the room."""
        if self.bytes + need > self.max_bytes:
            heap = [(n.last_used, id(n), n) for n in self._nodes() if not n.children and id(n) not in keep]
            heapq.heapify(heap)
            while heap and self.bytes + need > self.max_bytes:
                _, _, leaf = heapq.heappop(heap)
                parent = leaf.parent
                assert parent is not None
                del parent.children[leaf.tokens[0]]
                self.bytes -= leaf.nbytes
                self.stats.evicted_tokens += len(leaf.tokens)
                if parent is not self.root and not parent.children and id(parent) not in keep:
                    heapq.heappush(heap, (parent.last_used, id(parent), parent))
        return self.max_bytes - self.bytes

    def _nodes(self) -> list[_Node]:
        out, todo = [], list(self.root.children.values())
        while todo:
            node = todo.pop()
            out.append(node)
            todo.extend(node.children.values())
        return out

    @property
    def cached_tokens(self) -> int:
        """Tokens held in the tree (each stored once)."""
        return sum(len(n.tokens) for n in self._nodes())


def _common(tokens: tuple[int, ...], ids: Sequence[int], start: int, limit: int) -> int:
    """How many of ``tokens`` equal ``ids[start:limit]`` from the start."""
    n = min(len(tokens), limit - start)
    i = 0
    while i < n and tokens[i] == ids[start + i]:
        i += 1
    return i

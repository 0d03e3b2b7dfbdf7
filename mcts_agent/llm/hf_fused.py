"""Fused evaluation for the transformers backend: after a sample is decoded, score candidate
next tokens after ``prompt + sample + suffix`` on top of the sample's own decode KV cache.

Only the tokens the cache does not already hold run: the evaluated text is tokenized
exactly as a separate scoring call would tokenize it, its longest common prefix with the
tokens in the cache row is read from the cache, and the rest (the suffix, plus any tokens
where re-tokenization differs from what was sampled) runs in one short forward pass. So
the result is the same as scoring the whole text again, up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from mcts_agent.llm import hf_decode


@dataclass
class CachedRow:
    """One decode row to evaluate: where its tokens sit in the live cache and what to score."""

    batch: int  # the row's position in the live decode batch
    held: list[int]  # the tokens whose keys/values the cache row holds, in sequence order
    slots: list[int]  # the cache position of each held token
    target: list[int]  # the token ids of the text to evaluate


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def row_slots(prompt_len: int, generated: int, shared: int, longest: int) -> list[int]:
    """Cache positions of a decode row's tokens: ``[shared prefix | padding | own prompt | generated]``
    with the own prompt ending at ``longest`` (the layout of ``TransformersBackend._decode``)."""
    own = range(longest - prompt_len + shared, longest)
    return list(range(shared)) + list(own) + list(range(longest, longest + generated))


def score_on_cache(model: torch.nn.Module, cache, rows: Sequence[CachedRow], filled: int,  # type: ignore[no-untyped-def]
                   candidates: Sequence[int], pad_id: int) -> list[list[float]]:
    """Next-token log-probabilities of ``candidates`` after each row's ``target``, one row each.

    ``cache`` is the live decode cache (``filled`` positions written); it is read, never changed.
    """
    dev = next(model.parameters()).device
    keep = [min(common_prefix(r.held, r.target), len(r.target) - 1) for r in rows]
    rests = [r.target[k:] for r, k in zip(rows, keep)]
    width = max(map(len, rests))
    n = len(rows)
    sel = torch.tensor([r.batch for r in rows], device=dev)
    keys, values = [], []
    for layer in cache.layers:
        k, v = layer.keys.index_select(0, sel), layer.values.index_select(0, sel)
        pad = (n, k.shape[1], width, k.shape[3])
        keys.append(torch.cat([k[:, :, :filled], k.new_zeros(pad)], dim=2))
        values.append(torch.cat([v[:, :, :filled], v.new_zeros(pad)], dim=2))
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, filled + width), dtype=torch.long)
    pos = torch.zeros((n, width), dtype=torch.long)
    for i, (r, k, rest) in enumerate(zip(rows, keep, rests)):
        mask[i, torch.tensor(r.slots[:k], dtype=torch.long)] = 1
        mask[i, filled + width - len(rest):] = 1
        ids[i, width - len(rest):] = torch.tensor(rest)
        pos[i, width - len(rest):] = torch.arange(k, k + len(rest))
    out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                past_key_values=hf_decode.make_buffer_cache(keys, values, filled), use_cache=True, logits_to_keep=1)
    logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    return logp[:, torch.tensor(list(candidates), device=dev)].tolist()

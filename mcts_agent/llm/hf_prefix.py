"""Prompts that share a long prefix (a system message and few-shot examples, then each
node's text): the shared prefix runs once and each chunk of prompts reuses its KV cache,
running only its own suffix. Used for critic next-token logits here and for the prefill of
``TransformersBackend.generate``."""

from __future__ import annotations

from typing import Sequence

import torch

from mcts_agent.llm import hf_decode

MIN_SHARED = 16  # shorter common prefixes are not worth a separate pass
MAX_ROWS = 64  # rows per chunk: bounds the copied prefix KV (rows x prefix length)


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix, leaving every sequence at least one token of its own."""
    first, n = seqs[0], min(len(s) for s in seqs) - 1
    i = 0
    while i < n and all(s[i] == first[i] for s in seqs):
        i += 1
    return i


def usable_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """The common prefix worth running once (``common_prefix_len``), or 0 when too short."""
    if len(seqs) < 2:
        return 0
    shared = common_prefix_len(seqs)
    return shared if shared >= MIN_SHARED else 0


def shared_prefix_last_logits(model: torch.nn.Module, prompts: list[list[int]], pad_id: int, device: torch.device,
                              prefill_tokens: int) -> torch.Tensor | None:
    """``[len(prompts), vocab]`` float logits at each prompt's last token, or None when the
    prompts share fewer than ``MIN_SHARED`` tokens (the caller then runs them whole)."""
    shared = usable_prefix_len(prompts)
    if not shared:
        return None
    prefix = prefix_kv(model, prompts[0][:shared], device)
    result: torch.Tensor | None = None
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    start = 0
    while start < len(order):
        end, width = start + 1, len(prompts[order[start]]) - shared
        while end < len(order):  # grow the chunk while its suffix tokens fit the budget
            w = len(prompts[order[end]]) - shared
            if (end - start + 1) * w > prefill_tokens or end - start + 1 > MAX_ROWS:
                break
            end, width = end + 1, w
        chunk = order[start:end]
        rows = len(chunk)
        ids = torch.full((rows, width), pad_id, dtype=torch.long)
        mask = torch.zeros((rows, shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for r, i in enumerate(chunk):
            suffix = prompts[i][shared:]
            ids[r, width - len(suffix):] = torch.tensor(suffix)
            mask[r, shared + width - len(suffix):] = 1
        ids, mask = ids.to(device), mask.to(device)
        position_ids = (mask.cumsum(-1) - 1).clamp_(min=0)[:, shared:]
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True,
                       past_key_values=prefix_cache(prefix, rows, width), logits_to_keep=1).logits
        if result is None:
            result = torch.empty((len(prompts), logits.shape[-1]), dtype=torch.float32, device=device)
        result[torch.tensor(chunk, device=device)] = logits[:, -1].float()
        start = end
    return result


def prefix_kv(model: torch.nn.Module, prefix: Sequence[int], device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer ``(keys, values)`` of one run over ``prefix`` (batch of one)."""
    out = model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True)
    return [(layer.keys, layer.values) for layer in out.past_key_values.layers]


def prefix_cache(prefix: list[tuple[torch.Tensor, torch.Tensor]], rows: int, width: int):  # type: ignore[no-untyped-def]
    """A buffer cache of ``rows`` rows holding the prefix, with room for ``width`` more positions."""
    keys, values = [], []
    for k, v in prefix:
        shared = k.shape[2]
        kb = torch.empty((rows, k.shape[1], shared + width, k.shape[3]), dtype=k.dtype, device=k.device)
        vb = torch.empty_like(kb)
        kb[:, :, :shared] = k
        vb[:, :, :shared] = v
        keys.append(kb)
        values.append(vb)
    return hf_decode.make_buffer_cache(keys, values, prefix[0][0].shape[2])

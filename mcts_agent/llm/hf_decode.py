"""Decode-loop pieces for the transformers backend: a preallocated KV cache, a copy-free
grouped-query attention for single-token steps, and seeded per-row sampling.

Why not ``model.generate``: it cannot share one prompt pass between ``n`` samples of
different requests, it re-concatenates the whole KV cache every step, and it copies every
key/value head ``num_heads / num_kv_heads`` times per step when a padding mask is present.
"""

from __future__ import annotations

import hashlib
import random
from typing import Sequence

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, DynamicCache, PretrainedConfig
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTN_NAME = "mcts_agent_sdpa"


def supports_kv_buffer(config: PretrainedConfig) -> bool:
    """True when every layer is plain full attention (no sliding windows, no linear attention)."""
    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # noqa: BLE001 - exotic configs: use the stock cache instead
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class KVBufferLayer(DynamicLayer):
    """A full-attention cache layer over a preallocated ``[rows, heads, capacity, dim]`` buffer.

    Appends write in place, so a decode step copies one position instead of the whole cache.
    ``keys``/``values`` are views of the filled part, which is all transformers reads.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()
        self._k, self._v, self._len = keys, values, length
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._refresh()

    def _refresh(self) -> None:
        self.keys = self._k[:, :, : self._len]
        self.values = self._v[:, :, : self._len]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self._len + key_states.shape[-2]
        if end > self._k.shape[2]:
            raise RuntimeError(f"KV buffer overflow: {end} positions > capacity {self._k.shape[2]}")
        self._k[:, :, self._len : end] = key_states
        self._v[:, :, self._len : end] = value_states
        self._len = end
        self._refresh()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._refresh()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)


def make_buffer_cache(keys: list[torch.Tensor], values: list[torch.Tensor], length: int) -> Cache:
    """A cache over per-layer buffers whose first ``length`` positions are filled."""
    return Cache(layers=[KVBufferLayer(k, v, length) for k, v in zip(keys, values)])


def _gqa_decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kw):
    """SDPA, but one-token steps with grouped KV heads fold the query groups into the query
    length instead of repeating keys and values (identical maths, no copies)."""
    rows, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if q_len != 1 or kv_heads == heads or heads % kv_heads or dropout or kw.get("position_bias") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kw
        )
    q = query.reshape(rows, kv_heads, heads // kv_heads, dim)
    mask = attention_mask
    if mask is not None and mask.dim() == 4:
        mask = mask[:, :, -1:, : key.shape[2]]  # [rows, 1, 1, kv] broadcasts over heads and groups
    out = F.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(rows, 1, heads, dim), None


def install_gqa_attention(model: torch.nn.Module) -> bool:
    """Switch an sdpa model to the copy-free decode attention; False when not applicable."""
    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(ATTN_NAME, _gqa_decode_attention)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
    try:
        model.set_attn_implementation(ATTN_NAME)
    except (ValueError, AttributeError, NotImplementedError):
        return False
    return config._attn_implementation == ATTN_NAME


def row_seed(*parts: object) -> int:
    """A stable 64-bit seed from hashable parts (independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def choose_tokens(
    logits: torch.Tensor,
    temperature: Sequence[float],
    top_p: Sequence[float],
    rngs: Sequence[random.Random | None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row; return it and its log-probability under the unscaled model.

    Greedy rows (temperature 0) take the argmax. Sampled rows draw by inverse CDF with one
    uniform from their own generator, so a row's sample does not depend on its batch.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    tokens = logp.argmax(dim=-1)
    sampled = [i for i, t in enumerate(temperature) if t > 0]
    if sampled:
        idx = torch.tensor(sampled, device=logits.device)
        temps = torch.tensor([temperature[i] for i in sampled], device=logits.device, dtype=torch.float32)
        probs = torch.softmax(logits.float().index_select(0, idx) / temps[:, None], dim=-1)
        u = torch.tensor([rngs[i].random() for i in sampled], device=logits.device, dtype=torch.float32)
        ps = [top_p[i] for i in sampled]
        if min(ps) < 1.0:
            probs, order = probs.sort(dim=-1, descending=True)
            cum = probs.cumsum(dim=-1)
            p = torch.tensor(ps, device=logits.device, dtype=torch.float32)
            probs = probs.masked_fill(cum - probs >= p[:, None], 0.0)  # keep the nucleus, always >= 1 token
        else:
            order = None
        cdf = probs.cumsum(dim=-1)
        pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=cdf.shape[-1] - 1)
        if order is not None:
            pick = order.gather(1, pick)
        tokens[idx] = pick.squeeze(1)
    return tokens, logp.gather(1, tokens[:, None]).squeeze(1)

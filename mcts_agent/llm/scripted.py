"""A scripted backend for unit tests of search logic: deterministic, no model."""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

from mcts_agent.llm.types import Backend, Completion, FinishReason, GenerationRequest, truncate_at_stop, valid_text

# A script maps (prompt, sample index) to the raw text the "model" writes.
Script = Callable[[str, int], str]


class ScriptedBackend(Backend):
    """Answers every request from ``script``; records each batch it was called with.

    Each character is one token (id = its code point); a completion cut by
    ``max_tokens`` ends with ``FinishReason.LENGTH``, one cut at a stop string with
    ``STOP``. Logprobs are a deterministic function of the text, so priors differ.
    """

    name = "scripted"

    def __init__(self, script: Script, *, score_fn: Callable[[str, str], float] | None = None) -> None:
        super().__init__()
        self.script = script
        self.score_fn = score_fn
        self.batches: list[list[GenerationRequest]] = []  # every generate() call, for assertions

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        self.batches.append(list(requests))
        self.stats.calls += 1
        self.stats.prompts += len(requests)
        out = []
        for r in requests:
            prompt = r.prompt if isinstance(r.prompt, str) else "".join(map(chr, r.prompt))
            self.stats.prompt_tokens += len(prompt)
            outs = []
            for i in range(r.n):
                raw = valid_text(self.script(prompt, i))  # like a tokenizer's decode: always valid UTF-8
                text, matched = truncate_at_stop(raw, r.stop)
                reason = FinishReason.STOP
                if len(text) > r.max_tokens:
                    text, matched, reason = text[: r.max_tokens], None, FinishReason.LENGTH
                ids = [ord(c) for c in text]
                lp = -(int(hashlib.sha1(text.encode()).hexdigest()[:4], 16) % 1000) / 1000.0 - 0.01
                outs.append(Completion(text=text, token_ids=ids, logprobs=[lp] * max(1, len(ids)) if ids else [],
                                       finish_reason=reason, stop_reason=matched))
                self.stats.generated_tokens += len(ids)
            out.append(outs)
        return out

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        self.stats.score_calls += 1
        if self.score_fn is None:
            return [-math.log(2) * len(c) for c in continuations]
        return [self.score_fn(p, c) for p, c in zip(prompts, continuations)]

    def count_tokens(self, text: str) -> int:
        return len(text)

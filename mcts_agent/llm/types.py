"""The policy-backend contract: batched, order-preserving, like ``vllm.LLM.generate``."""

from __future__ import annotations

import abc
import enum
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from mcts_agent.errors import ConfigError


class FinishReason(str, enum.Enum):
    """Why a completion ended."""

    STOP = "stop"  # a stop string or the end-of-sequence token
    LENGTH = "length"  # max_tokens was reached: the step is cut, not finished


@dataclass(frozen=True)
class EvalSuffix:
    """Fused evaluation: after each sample, score ``candidates`` as the next token of
    ``prompt + sample text + suffix``, reading the sample's own KV cache (backends with
    ``supports_fused_eval``; others ignore it)."""

    suffix: str
    candidates: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.suffix, str):
            raise ConfigError(f"EvalSuffix.suffix must be a string, got {type(self.suffix).__name__}")
        cands = self.candidates
        if isinstance(cands, str) or not cands or not all(isinstance(c, str) and c for c in cands):
            raise ConfigError(f"EvalSuffix.candidates must be a tuple of non-empty strings, got {self.candidates!r}")


@dataclass(frozen=True)
class Evaluation:
    """What a fused evaluation scored: the exact ``text`` and one log-likelihood per candidate
    (as ``Backend.next_token_logprobs([text], candidates)`` would return them)."""

    text: str
    candidates: tuple[str, ...]
    logprobs: tuple[float, ...]


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt and how to sample from it. ``n`` samples share one prompt pass.

    ``evaluate`` asks for a fused evaluation of every sample (see ``EvalSuffix``).
    """

    prompt: str | tuple[int, ...]
    n: int = 1
    max_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    evaluate: EvalSuffix | None = None

    def __post_init__(self) -> None:
        if self.evaluate is not None and not isinstance(self.evaluate, EvalSuffix):
            raise ConfigError("GenerationRequest.evaluate must be an EvalSuffix or None, "
                              f"got {type(self.evaluate).__name__}")
        if self.n < 1:
            raise ConfigError(f"GenerationRequest.n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise ConfigError(f"GenerationRequest.max_tokens must be >= 1, got {self.max_tokens}")
        if not (self.temperature >= 0.0 and math.isfinite(self.temperature)):
            raise ConfigError(f"GenerationRequest.temperature must be a finite number >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"GenerationRequest.top_p must be in (0, 1], got {self.top_p}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"GenerationRequest.stop must be a tuple of non-empty strings, got {self.stop!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class Completion:
    """One sampled continuation. ``text`` excludes the stop string that ended it."""

    text: str
    token_ids: list[int]
    logprobs: list[float]  # one per generated token, under the sampling distribution's model
    finish_reason: FinishReason
    stop_reason: str | None = None  # the stop string that matched, if any
    evaluation: Evaluation | None = None  # the fused evaluation the request asked for, if the backend made one

    @property
    def cumulative_logprob(self) -> float:
        return float(sum(self.logprobs))

    @property
    def mean_logprob(self) -> float:
        """Length-normalised log-probability (the PUCT prior uses it)."""
        return self.cumulative_logprob / max(1, len(self.logprobs))


@dataclass
class BackendStats:
    """Counters every backend keeps; the planner reports them per run."""

    calls: int = 0
    prompts: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    score_calls: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class Backend(abc.ABC):
    """A batched policy model. Results come back in the order of the requests."""

    name: str = "backend"
    supports_fused_eval: bool = False  # generate() fills Completion.evaluation for requests with ``evaluate``

    def __init__(self) -> None:
        self.stats = BackendStats()

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """Sample ``request.n`` completions for every request, in one batched call."""

    @abc.abstractmethod
    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Summed log-likelihood of each continuation given its prompt (pairs, batched)."""

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[list[float]]:
        """Log-likelihood of each candidate continuation after each prompt: one row per prompt.

        Critics use it to read "Yes"/"No" probabilities. Backends that can read single-token
        candidates off one forward pass per prompt override it; this default scores pairs.
        """
        k = len(candidates)
        flat = self.score([p for p in prompts for _ in range(k)], list(candidates) * len(prompts))
        return [list(flat[i * k:(i + 1) * k]) for i in range(len(prompts))]

    def format_chat(self, messages: Sequence[dict[str, str]], tools: Sequence[dict[str, Any]] | None = None) -> str:
        """Render chat messages (and tool schemas) as the model's prompt, ending where the assistant speaks."""
        from mcts_agent.llm.chat import plain_chat

        return plain_chat(messages, tools)

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes (a whitespace estimate unless overridden)."""
        return max(1, len(text.split()))

    def close(self) -> None:
        """Release engines, processes and connections."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def valid_text(text: str) -> str:
    """``text`` with lone surrogates (which cannot be written as UTF-8) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, str | None]:
    """Cut ``text`` at the earliest stop string; return the kept text and the matched stop."""
    best, matched = len(text), None
    for s in stop:
        i = text.find(s)
        if i != -1 and i < best:
            best, matched = i, s
    return text[:best], matched

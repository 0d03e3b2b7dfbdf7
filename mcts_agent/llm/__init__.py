"""Policy backends behind one batched, order-preserving interface."""

from __future__ import annotations

from typing import Any

from mcts_agent.errors import ConfigError
from mcts_agent.llm.types import Backend, BackendStats, Completion, FinishReason, GenerationRequest

BACKENDS = ("transformers", "vllm", "openai")


def load_backend(kind: str = "transformers", model: str | None = None, **kwargs: Any) -> Backend:
    """Build a backend by name. ``model`` is an HF id, a local path, or None for the embedded model."""
    if kind == "transformers":
        from mcts_agent.llm.transformers_backend import TransformersBackend

        return TransformersBackend(model, **kwargs)
    if kind == "vllm":
        from mcts_agent.llm.vllm_backend import VLLMBackend

        return VLLMBackend(model, **kwargs)
    if kind == "openai":
        from mcts_agent.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(model=model, **kwargs)
    raise ConfigError(f"unknown backend {kind!r}; expected one of {BACKENDS}")


__all__ = ["Backend", "BackendStats", "Completion", "FinishReason", "GenerationRequest", "load_backend", "BACKENDS"]

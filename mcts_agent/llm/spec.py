"""Which backend to load and how: one dataclass shared by the CLI commands and configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mcts_agent.errors import ConfigError
from mcts_agent.llm.types import Backend


@dataclass
class BackendSpec:
    """A policy backend by name plus the options that backend understands."""

    backend: str = field(default="transformers", metadata={"help": "Policy backend: transformers | vllm | openai."})
    model: str | None = field(default=None, metadata={
        "help": "HF model id, local directory or .gguf, or 'embedded' (the default SmolLM2-135M)."})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server URL (backend openai)."})
    device: str | None = field(default=None, metadata={"help": "transformers: cpu, cuda, cuda:1 (default: auto)."})
    cache_dir: str | None = field(default=None, metadata={
        "help": "transformers: cache root for the embedded model (default: $MCTS_AGENT_CACHE or ~/.cache/mcts-agent)."})
    options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Further constructor options of the backend (vllm: max_model_len, gpu_memory_utilization; "
                "transformers: dtype, kv_cache_gb; openai: api_key, timeout)."})

    def __post_init__(self) -> None:
        from mcts_agent.llm import BACKENDS

        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; expected one of {list(BACKENDS)}")
        if self.base_url is not None and self.backend != "openai":
            raise ConfigError(f"--base-url only applies to --backend openai, not {self.backend!r}")
        if not isinstance(self.options, dict):
            raise ConfigError(f"backend options must be an object of constructor options, got {self.options!r}")
        if (self.device is not None or self.cache_dir is not None) and self.backend != "transformers":
            raise ConfigError(f"--device and --cache-dir only apply to --backend transformers, not {self.backend!r}")

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``load_backend`` that were set."""
        return {**{k: v for k in ("base_url", "device", "cache_dir") if (v := getattr(self, k)) is not None},
                **self.options}

    def load(self, **extra: Any) -> Backend:
        """Build the backend; ``extra`` adds constructor options (e.g. ``seed``) for backends that take them."""
        from mcts_agent.llm import load_backend

        extra = {k: v for k, v in extra.items() if not (k == "seed" and self.backend == "openai")}
        return load_backend(self.backend, self.model, **self.kwargs(), **extra)

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
    prefix_cache_gb: float | None = field(default=None, metadata={
        "help": "transformers: GiB of prompt KV kept across calls, so a child's prompt reuses its parent's "
                "prompt + step instead of prefilling it again (0: off; default 1.0)."})
    options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Further constructor options of the backend (vllm: max_model_len, gpu_memory_utilization; "
                "transformers: dtype, kv_cache_gb, share_prefix; openai: api_key, timeout)."})
    replicas: int = field(default=0, metadata={
        "help": "Serve the model from N Ray actors, one replica each, on the --ray cluster (0: load it in this process)."})
    replica_resources: str = field(default="CPU=1", metadata={
        "help": "What each replica asks Ray for; GPU=1 puts one transformers or vLLM replica on each GPU."})

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
        if self.prefix_cache_gb is not None:
            if self.backend != "transformers":
                raise ConfigError(f"--prefix-cache-gb only applies to --backend transformers, not {self.backend!r}")
            if isinstance(self.prefix_cache_gb, bool) or not isinstance(self.prefix_cache_gb, (int, float)) \
                    or self.prefix_cache_gb < 0:
                raise ConfigError(f"--prefix-cache-gb must be a number >= 0 (0: off), got {self.prefix_cache_gb!r}")
        if not isinstance(self.replicas, int) or isinstance(self.replicas, bool) or self.replicas < 0:
            raise ConfigError(f"--replicas must be an integer >= 0, got {self.replicas!r}")
        from mcts_agent.ray_executor import check_resources

        check_resources(self.replica_resources, "--replica-resources")

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``load_backend`` that were set."""
        set_ = ("base_url", "device", "cache_dir", "prefix_cache_gb")
        return {**{k: v for k in set_ if (v := getattr(self, k)) is not None},
                **self.options}

    def load(self, **extra: Any) -> Backend:
        """Build the backend; ``extra`` adds constructor options (e.g. ``seed``) for backends that take them.

        With ``replicas`` > 0 the backend is loaded in that many Ray actors (on the cluster this
        process is connected to, or a local one) behind one ``RayBackend``.
        """
        from mcts_agent.llm import load_backend

        if self.replicas:
            from dataclasses import replace

            from mcts_agent.llm.ray_backend import RayBackend

            return RayBackend(replace(self, replicas=0), self.replicas, resources=self.replica_resources,
                              load_options=extra)

        extra = {k: v for k, v in extra.items() if not (k == "seed" and self.backend == "openai")}
        return load_backend(self.backend, self.model, **self.kwargs(), **extra)

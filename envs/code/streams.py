"""Reading a sandboxed process's pipes: capped buffers, one select loop with a deadline, and
the record of what the process did (``ProcessRun``)."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

from mcts_agent.envs.code import procs


class Capped:
    """Keeps the first ``cap`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap, self.chunks, self.size, self.total = cap, [], 0, 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        if self.size < self.cap:
            keep = data[: self.cap - self.size]
            self.chunks.append(keep)
            self.size += len(keep)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def truncated(self) -> bool:
        return self.total > self.size

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class ProcessRun:
    """What a sandboxed process tree did (``Sandbox.execute``, ``warm.Zygote.run``); no verdict."""

    returncode: int | None
    stdout: Capped
    stderr: Capped
    status: bytes  # what arrived on the status pipe (capped)
    timed_out: bool
    duration_s: float
    run_id: str
    memory_peak_bytes: int | None = None
    oom_killed: bool = False
    start_error: str | None = None


def collect(proc: subprocess.Popen, status_r: int | None, deadline: float, output_cap: int,
            status_cap: int) -> tuple[Capped, Capped, Capped, bool]:
    """Read stdout, stderr and the status pipe until all close, the process exits (plus 0.2 s
    for leftovers holding the pipes), or ``deadline`` passes. Closes ``status_r``.
    Returns (stdout, stderr, status, timed_out)."""
    assert proc.stdout is not None and proc.stderr is not None
    try:
        return collect_fds(proc.stdout.fileno(), proc.stderr.fileno(), status_r,
                           lambda: procs.exited_nowait(proc.pid), deadline, output_cap, status_cap)
    finally:
        if status_r is not None:
            os.close(status_r)


def collect_fds(out_r: int, err_r: int, status_r: int | None, exited: Callable[[], bool], deadline: float,
                output_cap: int, status_cap: int) -> tuple[Capped, Capped, Capped, bool]:
    """``collect`` for any three pipes; ``exited()`` says whether the process has exited."""
    out, err, status = Capped(output_cap), Capped(output_cap), Capped(status_cap)
    streams = {out_r: out, err_r: err}
    if status_r is not None:
        streams[status_r] = status
    sel = selectors.DefaultSelector()
    for fd in streams:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    timed_out, exit_seen_at = False, None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if exit_seen_at is None and exited():
                exit_seen_at = now
            if exit_seen_at is not None and now - exit_seen_at > 0.2:
                break
            for key, _ in sel.select(min(deadline - now, 0.1)):
                try:
                    data = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if data:
                    streams[key.fd].add(data)
                else:
                    sel.unregister(key.fd)
    finally:
        sel.close()
    return out, err, status, timed_out

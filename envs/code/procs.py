"""Process bookkeeping for the sandbox: exit checks that keep the pid reserved, and a sweep.

The sweep finds every process that belongs to one sandbox run without cgroups: by session
id (the run's leader starts a new session) and by a random token in the environment every
sandboxed process inherits. A child that calls ``setsid`` leaves the session but keeps the
token; namespaced backends also kill everything left when the run's pid namespace ends.
"""

from __future__ import annotations

import os
import signal
import time

TOKEN_VAR = "MCTS_SANDBOX_ID"


def exited_nowait(pid: int) -> bool:
    """Whether child ``pid`` has exited, WITHOUT reaping it (its pid and pgid stay reserved)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # already reaped
    return info is not None


def wait_exit_nowait(pid: int, timeout: float) -> bool:
    """Poll ``exited_nowait`` with backoff until ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    delay = 0.0005
    while True:
        if exited_nowait(pid):
            return True
        left = end - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.02)


def kill_group(pgid: int) -> None:
    """SIGKILL process group ``pgid``; a group that is already gone is fine."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (empty if it is gone)."""
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                out += [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        pass
    return out


def kill_below(pid: int, wait_s: float = 1.0) -> None:
    """SIGKILL the children of our child ``pid`` and give ``pid`` time to reap them and exit.

    Killing the leader first would orphan them: re-parented to the host's pid 1, which in a
    container may never reap them (zombies). bwrap's monitor exits once its child is reaped.
    """
    for child in children(pid):
        try:
            os.kill(child, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    wait_exit_nowait(pid, wait_s)


def sweep(session_id: int | None, token: str | None, wait_s: float = 5.0) -> int:
    """SIGKILL every process in session ``session_id`` or carrying ``token`` until none is
    left (or ``wait_s`` passes: a process being killed can take a moment to go away).
    Returns how many kills were sent.

    Call it while the session leader is still unreaped so its id cannot have been reused.
    """
    if not os.path.isdir("/proc"):
        return 0
    needle = f"{TOKEN_VAR}={token}\0".encode() if token else None
    me, killed = os.getpid(), 0
    end, delay = time.monotonic() + wait_s, 0.001
    while True:
        victims = [pid for pid in _pids() if pid != me and _matches(pid, session_id, needle)]
        if not victims or time.monotonic() > end:
            return killed
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _pids() -> list[int]:
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]


def _matches(pid: int, session_id: int | None, needle: bytes | None) -> bool:
    try:
        if session_id is not None:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2:].split()  # state ppid pgrp session ...
            if int(fields[3]) == session_id and fields[0] != b"Z":
                return True
        if needle is not None:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return needle in f.read() + b"\0"
    except (OSError, ValueError, IndexError):
        pass
    return False

"""Per-run memory (and pids) cgroups, where this machine lets us create them.

A run's cgroup caps everything the kernel charges to it, which RLIMIT_AS does not see:
tmpfs pages (scratch, /tmp, /dev/shm), shared memory, memfd files, pipe buffers and, on
current kernels, inodes and dentries (so the file count in a tmpfs is bounded too).
cgroup v1 (``memory`` and ``pids`` hierarchies) and v2 (a delegated subtree where the
``memory`` controller is enabled) are supported. Each run gets ``mcts-sandbox-<id>`` below
the cgroup this process is in; its peak usage is read before it is removed.

Joining: the launcher is moved in right after it starts, then every process already below
it (a fork either finishes before a move or its child is born inside), all before the
in-sandbox driver has read the nonce that lets untrusted code start.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from mcts_agent.envs.code import procs

ROOT = "/sys/fs/cgroup"


@dataclass(frozen=True)
class Hierarchy:
    """Where per-run cgroups go for one controller, and how its files are named."""

    controller: str  # "memory" or "pids"
    parent: str  # the directory per-run cgroups are created in
    v2: bool


def _own_path(controller: str) -> tuple[str, bool] | None:
    """(path of this process's cgroup, is_v2) for ``controller``."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return os.path.join(ROOT, controller) + path, False
    for line in lines:
        if line.startswith("0::"):
            base = ROOT if os.path.exists(os.path.join(ROOT, "cgroup.controllers")) else os.path.join(ROOT, "unified")
            return base + line[3:], True
    return None


def find(controller: str) -> tuple[Hierarchy | None, str]:
    """The hierarchy to use for ``controller``, or (None, why not)."""
    own = _own_path(controller)
    if own is None:
        return None, f"no {controller} cgroup for this process"
    path, v2 = own
    if v2:
        try:
            with open(os.path.join(path, "cgroup.controllers"), encoding="utf-8") as f:
                if controller not in f.read().split():
                    return None, f"the {controller} controller is not enabled in {path}"
        except OSError as e:
            return None, f"cannot read {path}/cgroup.controllers: {e.strerror}"
    hierarchy = Hierarchy(controller, path, v2)
    sweep_stale(hierarchy)
    try:  # a trial run: create, limit, remove
        probe = RunCgroups([hierarchy], f"probe{os.getpid()}{threading.get_ident()}", 64 << 20, 64)
        probe.remove()
    except OSError as e:
        return None, f"cannot create a {controller} cgroup under {path}: {e.strerror or e}"
    return hierarchy, ""


STALE_AFTER_S = 600.0  # a run's cgroup older than this with no process in it was left by a killed framework


def sweep_stale(h: Hierarchy, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove empty ``mcts-sandbox-*`` cgroups older than ``older_than_s`` (a framework killed
    with -9 cannot remove its runs' cgroups); return how many were removed."""
    removed = 0
    try:
        names = [n for n in os.listdir(h.parent) if n.startswith("mcts-sandbox-")]
    except OSError:
        return 0
    now = time.time()
    for name in names:
        path = os.path.join(h.parent, name)
        try:
            if now - os.stat(path).st_mtime < older_than_s:
                continue
            with open(os.path.join(path, "cgroup.procs"), encoding="utf-8") as f:
                if f.read().strip():
                    continue
            os.rmdir(path)
            removed += 1
        except OSError:
            continue
    return removed


class RunCgroups:
    """The cgroups of one run: created with limits, joined by its processes, removed after it."""

    def __init__(self, hierarchies: list[Hierarchy], run_id: str, memory_bytes: int, pids: int) -> None:
        self.dirs: list[tuple[Hierarchy, str]] = []
        try:
            for h in hierarchies:
                path = os.path.join(h.parent, f"mcts-sandbox-{run_id}")
                os.mkdir(path)
                self.dirs.append((h, path))
                for name, value in _limits(h, memory_bytes, pids):
                    if name.endswith("swap.max") or name.endswith("memsw.limit_in_bytes"):
                        _write_optional(os.path.join(path, name), value)
                    else:
                        _write(os.path.join(path, name), value)
        except OSError:
            self.remove()
            raise

    def join(self, pid: int) -> None:
        """Move ``pid``, then every process below it, into each cgroup."""
        for h, path in self.dirs:
            procs_file = os.path.join(path, "cgroup.procs")
            todo = [pid]
            while todo:
                p = todo.pop()
                try:
                    _write(procs_file, str(p))
                except ProcessLookupError:
                    continue
                todo += procs.children(p)

    def memory_peak(self) -> int | None:
        for h, path in self.dirs:
            if h.controller == "memory":
                for name in ("memory.peak", "memory.max_usage_in_bytes"):
                    try:
                        with open(os.path.join(path, name), encoding="utf-8") as f:
                            return int(f.read().split()[0])
                    except (OSError, ValueError, IndexError):
                        continue
        return None

    def oom_killed(self) -> bool:
        for h, path in self.dirs:
            if h.controller == "memory":
                for name, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
                    try:
                        with open(os.path.join(path, name), encoding="utf-8") as f:
                            for line in f:
                                k, _, v = line.partition(" ")
                                if k == key:
                                    return int(v) > 0
                    except (OSError, ValueError):
                        continue
        return False

    def remove(self) -> None:
        """Remove the cgroups (their processes are gone; a dying one may take a moment)."""
        for _, path in reversed(self.dirs):
            for delay in (0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.2):
                time.sleep(delay)
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    continue
        self.dirs = []


def _limits(h: Hierarchy, memory_bytes: int, pids: int) -> list[tuple[str, str]]:
    if h.controller == "pids":
        return [("pids.max", str(pids))]
    if h.v2:
        return [("memory.max", str(memory_bytes)), ("memory.swap.max", "0")]
    return [("memory.limit_in_bytes", str(memory_bytes)), ("memory.memsw.limit_in_bytes", str(memory_bytes))]


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _write_optional(path: str, value: str) -> None:
    try:
        _write(path, value)
    except OSError:
        pass  # no swap accounting on this kernel: nothing to limit

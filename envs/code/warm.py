"""Warm starts: runs forked from a pristine interpreter inside a long-lived bubblewrap sandbox.

A cold run pays for bwrap's namespaces and mounts and a Python start-up every time; a warm
run (``SandboxConfig(warm=True)``) sends its job to a ``Zygote``: one bwrap sandbox per
concurrent worker whose pid 1 (``_zygote``) forks a fresh child per run. Isolation is the
same sandbox (same mounts, seccomp filter, rlimits set by the driver in the child, per-run
cgroups joined by the child's host pid); what a run leaves behind is removed before the
next fork: every other process in the namespace is killed, /scratch, /tmp and /dev/shm are
emptied, and memory changes die with the child. SysV IPC and POSIX message queues, which
would outlive a run in the shared IPC namespace, are denied by the seccomp filter; without
it (an unknown architecture) or without ``--disable-userns`` warm starts are refused and
runs start cold.

The zygote holds no run's data: the child reads its own job from the job socket. A dead or
stuck zygote is killed with its bwrap and replaced by the next run.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from mcts_agent.envs.code import procs
from mcts_agent.envs.code import isolation as iso
from mcts_agent.envs.code.streams import Capped, ProcessRun, collect_fds

if TYPE_CHECKING:
    from mcts_agent.envs.code.cgroup import RunCgroups
    from mcts_agent.envs.code.sandbox import Sandbox

ZYGOTE_SOURCE = Path(__file__).with_name("_zygote.py").read_text()
MAX_JOB_BYTES = 150_000  # one SOCK_SEQPACKET message; larger jobs start cold
STATUS_FD = 3  # where the child finds the status pipe


class ZygoteDied(RuntimeError):
    """The zygote could not take the job; the caller may start the run cold instead."""


class Zygote:
    """One long-lived sandbox that forks a child per run (see the module docstring)."""

    def __init__(self, box: "Sandbox") -> None:
        cfg = box.config
        self.config = cfg  # no reference to the Sandbox: its finalizer closes zygotes
        self.host_dir = tempfile.mkdtemp(prefix="mcts-zygote-", dir=cfg.work_dir)
        os.chmod(self.host_dir, 0o755)
        self.ctl, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.job, job_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        seccomp_fd = iso.seccomp_pipe(box._seccomp) if box._seccomp is not None else None
        argv = [box.python, "-I", "-S", "-B", "-c", ZYGOTE_SOURCE, str(ctl_child.fileno()),
                str(job_child.fileno()), box.driver_source]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": iso.INSIDE_SCRATCH,
               "TMPDIR": iso.INSIDE_SCRATCH}
        fds = tuple(fd for fd in (ctl_child.fileno(), job_child.fileno(), seccomp_fd) if fd is not None)
        try:
            self.proc = subprocess.Popen(
                box._prefix(box._layout(self.host_dir), seccomp_fd, (), ()) + argv, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=fds, env=env, cwd=self.host_dir,
                start_new_session=True, **iso.popen_user(box.run_as))  # type: ignore[arg-type]
        except OSError as e:
            self._close_sockets()
            shutil.rmtree(self.host_dir, ignore_errors=True)
            raise ZygoteDied(f"could not start a zygote: {e}") from e
        finally:
            ctl_child.close()
            job_child.close()
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        self.alive = True
        self.child_ns: int | None = None
        self._zygote_pid: int | None = None

    # ----- messages from the zygote -------------------------------------------------------
    def _expect(self, word: bytes, deadline: float) -> int | None:
        """The number in the next ``word N`` message, or None when ``deadline`` passes first."""
        while True:
            left = max(0.0, deadline - time.monotonic())  # 0: look once without waiting
            ready, _, _ = select.select([self.ctl], [], [], left)
            if not ready:
                return None
            msg = self.ctl.recv(64)
            if not msg:
                self.alive = False
                raise ZygoteDied("the zygote exited")
            head, _, number = msg.partition(b" ")
            if head == word:
                return int(number)

    def _host_pid(self, ns_pid: int) -> int | None:
        """The host pid of the zygote's child whose pid in the namespace is ``ns_pid``."""
        if self._zygote_pid is None:
            kids = procs.children(self.proc.pid)
            self._zygote_pid = kids[0] if kids else None
        for pid in procs.children(self._zygote_pid) if self._zygote_pid else ():
            try:
                with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
                    for line in f:
                        if line.startswith("NSpid:") and int(line.split()[-1]) == ns_pid:
                            return pid
            except (OSError, ValueError):
                continue
        return None

    # ----- one run ------------------------------------------------------------------------
    def run(self, argv: list[str], sources: dict[str, str], env: dict[str, str], stdin: bytes, timeout: float,
            groups: "RunCgroups | None", token: str) -> ProcessRun:
        cfg = self.config
        if self.child_ns is None:
            self.child_ns = self._expect(b"ready", time.monotonic() + 30)
            if self.child_ns is None:
                self.alive = False
                raise ZygoteDied("the zygote did not fork a child in time")
            shutil.rmtree(self.host_dir, ignore_errors=True)  # bound inside already; nothing to leave behind
        job = repr({"argv": argv, "sources": sources, "env": env, "cwd": iso.INSIDE_SCRATCH}).encode()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        st_r, st_w = os.pipe()
        start = time.monotonic()
        try:
            socket.send_fds(self.job, [job], [in_r, out_w, err_w, st_w])
        except OSError as e:
            for fd in (in_r, in_w, out_r, out_w, err_r, err_w, st_r, st_w):
                os.close(fd)
            self.alive = False
            raise ZygoteDied(f"could not send the job: {e}") from e
        for fd in (in_r, out_w, err_w, st_w):
            os.close(fd)
        child_ns, self.child_ns = self.child_ns, None
        exit_status: list[int] = []
        try:
            host = self._host_pid(child_ns)
            if groups is not None and host is not None:
                groups.join(host)  # before stdin: the driver runs nothing untrusted until it reads it
            try:
                os.write(in_w, stdin)
            except OSError:
                pass
            os.close(in_w)
            in_w = -1

            def exited() -> bool:
                if not exit_status:
                    got = self._expect(b"exit", time.monotonic())
                    if got is not None:
                        exit_status.append(got)
                return bool(exit_status)

            deadline = start + timeout
            out, err, status, timed_out = collect_fds(out_r, err_r, st_r, exited, deadline, cfg.max_output_bytes,
                                                      cfg.max_result_bytes)
            if not exit_status and not timed_out:
                got = self._expect(b"exit", deadline)
                timed_out = got is None
                exit_status += [] if got is None else [got]
            if not exit_status:
                self.ctl.send(b"kill")
                got = self._expect(b"exit", time.monotonic() + 5)
                if got is None:
                    self.alive = False  # stuck: close() kills its whole sandbox
                exit_status.append(got if got is not None else 9)
        except (ZygoteDied, OSError):
            self.alive = False
            out, err, status, timed_out = Capped(0), Capped(0), Capped(0), time.monotonic() >= start + timeout
            exit_status = [9]
        finally:
            for fd in (out_r, err_r, st_r, in_w):
                if fd >= 0:
                    os.close(fd)
        duration = time.monotonic() - start
        peak = groups.memory_peak() if groups is not None else None
        oom = groups.oom_killed() if groups is not None else False
        return ProcessRun(os.waitstatus_to_exitcode(exit_status[0]), out, err, status.data, timed_out, duration,
                          token, peak, oom)

    # ----- the end ------------------------------------------------------------------------
    def _close_sockets(self) -> None:
        for s in (self.ctl, self.job):
            try:
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        """Stop the zygote and everything in its sandbox; reap bwrap; remove its directory."""
        self.alive = False
        self._close_sockets()  # the zygote exits when its control socket closes
        if procs.wait_exit_nowait(self.proc.pid, 0.5) is False:
            procs.kill_below(self.proc.pid)
        procs.kill_group(self.proc.pid)
        self.proc.wait()
        shutil.rmtree(self.host_dir, ignore_errors=True)


class ZygotePool:
    """The zygotes of one Sandbox: one per concurrent run, kept for reuse while healthy."""

    def __init__(self) -> None:
        self._idle: list[Zygote] = []
        self._live: set[Zygote] = set()  # idle or running a job
        self._lock = threading.Lock()
        # bwrap's --die-with-parent is the death signal of the *thread* that started it: a
        # zygote started from a pool's worker thread would die with that thread. One
        # long-lived thread starts them all, so a zygote lives as long as its Sandbox.
        self._spawner: ThreadPoolExecutor | None = None

    def take(self, box: "Sandbox") -> Zygote:
        """An idle zygote, or a new one (raises ``ZygoteDied`` if it cannot start)."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._spawner is None:
                self._spawner = ThreadPoolExecutor(1, thread_name_prefix="sandbox-zygotes")
            spawner = self._spawner
        zygote = spawner.submit(Zygote, box).result()
        with self._lock:
            self._live.add(zygote)
        return zygote

    def give_back(self, zygote: Zygote) -> None:
        if zygote.alive:
            with self._lock:
                self._idle.append(zygote)
            return
        with self._lock:
            self._live.discard(zygote)
        zygote.close()

    def pids(self) -> list[int]:
        with self._lock:
            live = list(self._live)
        return [pid for z in live for pid in procs.children(z.proc.pid)]

    def close(self) -> None:
        """Stop the idle zygotes (one running a job is closed when it comes back, if it died)."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._live.difference_update(idle)
        for z in idle:
            z.close()
        with self._lock:
            spawner, self._spawner = (self._spawner, None) if not self._live else (None, self._spawner)
        if spawner is not None:  # kept while a zygote runs a job: its bwrap dies with this thread
            spawner.shutdown(wait=True)

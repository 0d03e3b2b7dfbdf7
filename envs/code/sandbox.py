"""Run untrusted Python in an isolated process and tell PASS from everything else.

Each run gets a fresh interpreter (``python -I -S -B``) started through the best isolation
the kernel allows (see ``mcts_agent.envs.code.isolation``: under bubblewrap a read-only
minimal root, no network, no nested user namespaces, a seccomp filter against SysV IPC and
keyrings), in a new session with rlimits on CPU, address space, processes, file size and
open files, a per-run memory+pids cgroup where the machine allows one (``cgroup``), a
scrubbed environment, a scratch directory as cwd and HOME, capped output, and a wall-clock
timeout that kills the whole process group and sweeps up escaped children.

Verdicts (``SandboxResult.verdict_source``): tests of the trusted shape (``trusted``:
``assert f(x) == y`` and its tolerance forms) never enter the sandbox; only their call
expressions do, the program sends back the values, and this process compares them with
the expected values only it holds. Other tests run inside the sandbox after the program
and PASS needs a per-run nonce the driver writes at the end: a weaker, in-process verdict.

    box = Sandbox(SandboxConfig(timeout_s=5))
    result = box.run("def add(a, b):\\n    return a + b\\n", tests="assert add(1, 2) == 3")
    result.status is Status.PASSED and result.verdict_source is VerdictSource.TRUSTED
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Mapping, Sequence

from mcts_agent.envs.code import cgroup, judge, procs, seccomp, trusted, warm
from mcts_agent.envs.code import isolation as iso
from mcts_agent.envs.code.config import (SandboxConfig, SandboxResult, SandboxUnavailableError, Status,
                                         VerdictSource)
from mcts_agent.envs.code.streams import Capped, ProcessRun, collect
from mcts_agent.errors import ConfigError, EnvError

__all__ = ["Sandbox", "SandboxConfig", "SandboxResult", "SandboxUnavailableError", "Status", "VerdictSource",
           "ProcessRun"]

DRIVER_SOURCE = Path(__file__).with_name("_driver.py").read_text()
_MB = 1 << 20
CGROUP_SLACK_MB = 16  # the bwrap monitor, page tables: charged to the run's cgroup beside the program


class Sandbox:
    """Runs programs under one ``SandboxConfig``; thread-safe (each run is independent)."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.run_as = iso.default_run_as(self.config.run_as_uid)
        work_dir = self.config.work_dir or tempfile.gettempdir()
        if not os.path.isdir(work_dir):
            raise ConfigError(f"SandboxConfig.work_dir must be an existing directory, got {work_dir!r}")
        if self.run_as is not None and self.run_as != os.geteuid() and not iso.reachable(work_dir, self.run_as):
            raise ConfigError(f"SandboxConfig.work_dir {work_dir!r} must be reachable by the sandbox user "
                              f"(uid {self.run_as}): every directory on its path needs o+x")
        self.python = self._interpreter()
        self._python_dirs = iso.python_dirs(self.python)
        self._bwrap = iso.find_tool("bwrap", self.config.bwrap_path)
        self._unshare = iso.find_tool("unshare", self.config.unshare_path)
        self._seccomp = seccomp.program()
        self._hardened = True
        self.isolation = self._select()
        self._cgroups, self.cgroup_note = self._find_cgroups()
        self.driver_source = DRIVER_SOURCE
        self._zygotes = warm.ZygotePool()
        weakref.finalize(self, self._zygotes.close)

    def zygote_pids(self) -> list[int]:
        """Host pids of the warm zygotes (pid 1 of each long-lived sandbox), for monitoring."""
        return self._zygotes.pids()

    @property
    def warm(self) -> bool:
        """Whether runs fork from a warm zygote: asked for, and safe here (bwrap, hardened, seccomp)."""
        return (self.config.warm and self.isolation.backend is iso.Backend.BWRAP and self._hardened
                and self._seccomp is not None)

    def close(self) -> None:
        """Stop the warm zygotes (the next warm run starts a new one); cold sandboxes hold nothing."""
        self._zygotes.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """One line saying what protects a run: backend, user, interpreter, and what bounds memory."""
        who = "the current user" if self.run_as is None else f"uid {self.run_as}"
        cfg = self.config
        if self._cgroups:
            kinds = "+".join(h.controller for h in self._cgroups)
            memory = (f"per-run {kinds} cgroup{' (v2)' if self._cgroups[0].v2 else ' (v1)'}: "
                      f"{self._cgroup_memory_mb()} MiB for everything the run holds (tmpfs, shared memory, "
                      f"inodes included), {cfg.max_processes + 2} tasks; RLIMIT_AS {cfg.memory_mb} MiB per process")
        else:
            memory = (f"memory: rlimits only (RLIMIT_AS {cfg.memory_mb} MiB per process; tmpfs and memfd pages "
                      f"are bounded by their sizes and RLIMIT_FSIZE, not by a cgroup: {self.cgroup_note})")
        filt = ""
        if self.isolation.backend is iso.Backend.BWRAP:
            filt = ("; seccomp: SysV IPC, keyrings, io_uring, bpf, perf, userfaultfd denied" if self._seccomp
                    else "; no seccomp filter (unknown architecture): SysV IPC allowed")
        start = ("; warm starts: each run forks from a pristine interpreter in a long-lived sandbox, which is "
                 "emptied between runs" if self.warm else "; cold starts: a new sandbox per run")
        return f"{self.isolation.detail}{filt}; {memory}; runs as {who}; interpreter {self.python}{start}"

    # ----- choosing the interpreter, the backend, the cgroups ------------------------------
    def _interpreter(self) -> str:
        tried = []
        for exe in iso.interpreter_candidates(self.config.python):
            why = iso.probe(iso.Backend.NONE, tool=None, python=exe, run_as=self.run_as, allow_network=True)
            if why is None:
                return exe
            tried.append(f"{exe} ({why})")
        who = "the current user" if self.run_as is None else f"uid {self.run_as}"
        raise ConfigError(f"SandboxConfig.python: no interpreter that {who} can run; tried: {'; '.join(tried)}. "
                          "Expected a Python outside private directories such as /root, e.g. python='/usr/bin/python3'")

    def _select(self) -> iso.Isolation:
        cfg = self.config
        wanted = [iso.Backend(cfg.isolation)] if cfg.isolation != "auto" else list(iso.Backend)
        reasons: list[str] = []
        for backend in wanted:
            tool = {iso.Backend.BWRAP: self._bwrap, iso.Backend.UNSHARE: self._unshare}.get(backend)
            kw = dict(tool=tool, python=self.python, run_as=self.run_as, allow_network=cfg.allow_network)
            why = iso.probe(backend, **kw, seccomp=self._seccomp) if backend is iso.Backend.BWRAP \
                else iso.probe(backend, **kw)  # type: ignore[arg-type]
            if why is not None and backend is iso.Backend.BWRAP and tool is not None:
                if iso.probe(backend, **kw, hardened=False, seccomp=self._seccomp) is None:  # type: ignore[arg-type]
                    why, self._hardened = None, False  # an older bwrap or kernel: said in describe()
            if why is not None:
                reasons.append(f"{backend.value}: {why}")
                continue
            chosen = iso.describe(backend, cfg.allow_network, self._hardened)
            if cfg.require_isolation and not chosen.readonly_host_fs:
                reasons.append(f"{backend.value}: works but does not make the host filesystem read-only")
                continue
            if not cfg.allow_network and not chosen.no_network:
                reasons.append(f"{backend.value}: works but cannot cut the network")
                continue
            return chosen
        hint = ("install bubblewrap (scripts/install_system_deps.sh) and make sure the kernel allows user "
                "namespaces; or, knowing the program can then write to the host filesystem, pass "
                "require_isolation=False (and allow_network=True if no network namespace is possible)")
        raise SandboxUnavailableError(
            f"no sandbox isolation available for isolation={cfg.isolation!r}, "
            f"require_isolation={cfg.require_isolation}, allow_network={cfg.allow_network}: "
            + "; ".join(reasons) + f". To fix: {hint}")

    def _find_cgroups(self) -> tuple[list[cgroup.Hierarchy], str]:
        if self.config.memory_cgroup == "off":
            return [], "memory_cgroup='off'"
        memory, why = _cached_find("memory")
        if memory is None:
            if self.config.memory_cgroup == "require":
                raise SandboxUnavailableError(f"SandboxConfig.memory_cgroup='require' but {why}")
            return [], why
        pids, _ = _cached_find("pids")
        return [memory] + ([pids] if pids is not None else []), ""

    def _cgroup_memory_mb(self) -> int:
        return self.config.memory_mb + 3 * self.config.scratch_mb + CGROUP_SLACK_MB

    # ----- running Python with tests --------------------------------------------------------
    def run(self, program: str, *, tests: str | None = None, as_main: bool = True,
            timeout_s: float | None = None, run_id: str | None = None) -> SandboxResult:
        """Run ``program`` (Python source), then ``tests`` if given, and classify the outcome.

        ``tests`` of the trusted shape (``trusted.plan_tests``) are judged here: only their
        call expressions enter the sandbox. Others run in their own namespace after the
        program, with its names and unpatched builtins (``verdict_source="in-process"``).
        ``as_main`` runs the code as ``__main__`` (a main block runs); test harnesses pass
        False, like HumanEval's reference harness. ``run_id`` (random if None) is put in every
        process's environment as MCTS_SANDBOX_ID, to find them.
        """
        for name, value in (("program", program), ("tests", tests)):
            if not isinstance(value, str) and not (name == "tests" and value is None):
                raise EnvError(f"{name} must be Python source as a str, got {type(value).__name__}")
        plan = trusted.plan_tests(tests, program) if tests is not None else None
        files = {"program.py": program}
        if plan is not None:
            files["calls.py"], mode = plan.sandbox_source(), "calls:{files}/calls.py"
        elif tests is not None:
            files["tests.py"], mode = tests, "tests:{files}/tests.py"
        else:
            mode = "-"
        nonce = secrets.token_hex(16).encode()
        argv = self._driver_argv("{files}/program.py", "__main__" if as_main else "__sandboxed__", mode)
        raw = self._run_warm(argv, files, timeout_s, run_id, nonce + b"\n") if self.warm else None
        if raw is None:
            raw = self.execute(argv, files=files, timeout_s=timeout_s, run_id=run_id, stdin=nonce + b"\n",
                               status_pipe=True)
        return self._result(raw, nonce, plan)

    def _run_warm(self, argv: list[str], files: dict[str, str], timeout_s: float | None, run_id: str | None,
                  stdin: bytes) -> ProcessRun | None:
        """The run on a warm zygote, or None to start it cold (too big, or no zygote could take it)."""
        if sum(len(t) for t in files.values()) > warm.MAX_JOB_BYTES:
            return None
        if run_id is not None and not (isinstance(run_id, str) and run_id.isalnum() and len(run_id) >= 16):
            raise EnvError(f"run_id must be None or an alphanumeric str of >= 16 characters, got {run_id!r}")
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise EnvError(f"timeout_s must be > 0 seconds, got {timeout!r}")
        token = run_id or secrets.token_hex(16)
        inside = iso.INSIDE_PROGRAM_DIR
        sources = {f"{inside}/{name}": text for name, text in files.items()}
        argv = [a.replace("{files}", inside).replace("{status_fd}", str(warm.STATUS_FD))
                for a in argv[argv.index(DRIVER_SOURCE) + 1:]]  # the driver's own ARGS: it is loaded already
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": iso.INSIDE_SCRATCH,
               "TMPDIR": iso.INSIDE_SCRATCH, procs.TOKEN_VAR: token}
        groups = None
        try:
            zygote = self._zygotes.take(self)
            if self._cgroups:
                groups = cgroup.RunCgroups(self._cgroups, token, self._cgroup_memory_mb() * _MB,
                                           self.config.max_processes + 2)
            try:
                return zygote.run(argv, sources, env, stdin, timeout, groups, token)
            finally:
                self._zygotes.give_back(zygote)
        except (warm.ZygoteDied, OSError):
            return None
        finally:
            if groups is not None:
                groups.remove()

    def run_command(self, command: Sequence[str], **kw: object) -> ProcessRun:
        """Run ``command`` (an argv inside the sandbox) under the same limits, through the driver's
        ``exec`` mode: the primitive for layers such as a SWE env (``rw_binds`` for a scratch copy
        of a repository, ``ro_binds`` for a virtualenv; see ``execute``)."""
        return self.execute(self._driver_argv("-", "-", "exec") + list(command), stdin=b"\n",
                            status_pipe=True, **kw)  # type: ignore[arg-type]

    def _driver_argv(self, program: str, module: str, mode: str) -> list[str]:
        cfg = self.config
        limits = ",".join(str(v) for v in (cfg.effective_cpu_s, cfg.memory_mb * _MB, cfg.max_processes,
                                           cfg.max_file_mb * _MB, cfg.max_open_files))
        return [self.python, "-I", "-S", "-B", "-c", DRIVER_SOURCE, program, "{status_fd}", limits, module, mode]

    # ----- the general primitive ----------------------------------------------------------
    def execute(self, argv: Sequence[str], *, files: Mapping[str, str | bytes] | None = None,
                ro_binds: Sequence[tuple[str, str]] = (), rw_binds: Sequence[tuple[str, str]] = (),
                timeout_s: float | None = None, run_id: str | None = None, stdin: bytes = b"",
                status_pipe: bool = False) -> ProcessRun:
        """Run ``argv`` in the sandbox and collect what it did, nothing more (no verdict).

        ``files`` are written to a fresh per-run directory the process sees read-only;
        ``{files}`` and ``{status_fd}`` in ``argv`` become its path and the status pipe's fd.
        ``stdin`` is written to the process once it is in its cgroups, then stdin is closed.
        """
        if run_id is not None and not (isinstance(run_id, str) and run_id.isalnum() and len(run_id) >= 16):
            raise EnvError(f"run_id must be None or an alphanumeric str of >= 16 characters, got {run_id!r}")
        timeout = self.config.timeout_s if timeout_s is None else timeout_s
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise EnvError(f"timeout_s must be > 0 seconds, got {timeout!r}")
        host_dir = tempfile.mkdtemp(prefix="mcts-sandbox-", dir=self.config.work_dir)
        token = run_id or secrets.token_hex(16)
        try:
            return self._execute_in(host_dir, list(argv), dict(files or {}), ro_binds, rw_binds, timeout, token,
                                    stdin, status_pipe)
        finally:
            shutil.rmtree(host_dir, ignore_errors=True)

    def _layout(self, host_dir: str) -> iso.Layout:
        if self.isolation.backend is iso.Backend.BWRAP:
            return iso.Layout(host_dir, None, f"{iso.INSIDE_PROGRAM_DIR}/program.py", iso.INSIDE_SCRATCH)
        scratch = os.path.join(host_dir, "scratch")
        os.mkdir(scratch, 0o700)
        if self.run_as is not None and self.run_as != os.geteuid():
            os.chown(scratch, self.run_as, self.run_as)
        return iso.Layout(host_dir, scratch, os.path.join(host_dir, "program.py"), scratch)

    def _prefix(self, layout: iso.Layout, seccomp_fd: int | None, ro_binds: Sequence[tuple[str, str]],
                rw_binds: Sequence[tuple[str, str]]) -> list[str]:
        cfg, backend = self.config, self.isolation.backend
        if backend is iso.Backend.BWRAP:
            assert self._bwrap is not None
            return iso.bwrap_prefix(self._bwrap, layout, python_dirs=self._python_dirs,
                                    scratch_bytes=cfg.scratch_mb * _MB, allow_network=cfg.allow_network,
                                    extra_ro=cfg.extra_ro_paths, seccomp_fd=seccomp_fd, hardened=self._hardened,
                                    ro_binds=ro_binds, rw_binds=rw_binds)
        if ro_binds or rw_binds:
            raise EnvError(f"ro_binds / rw_binds need the bwrap backend, this sandbox uses {backend.value}")
        if backend is iso.Backend.UNSHARE:
            assert self._unshare is not None
            return iso.unshare_prefix(self._unshare, allow_network=cfg.allow_network)
        return []

    def _execute_in(self, host_dir: str, argv: list[str], files: dict[str, str | bytes],
                    ro_binds: Sequence[tuple[str, str]], rw_binds: Sequence[tuple[str, str]], timeout: float,
                    token: str, stdin: bytes, status_pipe: bool) -> ProcessRun:
        cfg = self.config
        layout = self._layout(host_dir)
        for name, text in files.items():
            with open(os.path.join(host_dir, name), "wb") as f:
                f.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.chmod(host_dir, 0o755)  # the sandbox user must read the files
        inside_files = os.path.dirname(layout.program_path)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": layout.scratch,
               "TMPDIR": layout.scratch, procs.TOKEN_VAR: token}
        status_r, status_w = os.pipe() if status_pipe else (None, None)
        seccomp_fd = iso.seccomp_pipe(self._seccomp) if (
            self._seccomp is not None and self.isolation.backend is iso.Backend.BWRAP) else None
        fds = tuple(fd for fd in (status_w, seccomp_fd) if fd is not None)
        argv = [a.replace("{files}", inside_files).replace("{status_fd}", str(status_w)) for a in argv]
        groups: cgroup.RunCgroups | None = None
        start = time.monotonic()
        try:
            if self._cgroups:
                groups = cgroup.RunCgroups(self._cgroups, token, self._cgroup_memory_mb() * _MB,
                                           cfg.max_processes + 2)
            proc = subprocess.Popen(
                self._prefix(layout, seccomp_fd, ro_binds, rw_binds) + argv, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=fds, env=env,
                cwd=layout.host_scratch or host_dir, start_new_session=True,
                **iso.popen_user(self.run_as))  # type: ignore[arg-type]
        except OSError as e:
            if status_r is not None:
                os.close(status_r)
            if groups is not None:
                groups.remove()
            return ProcessRun(None, Capped(0), Capped(0), b"", False, time.monotonic() - start, token,
                              start_error=f"could not start the sandbox: {e}")
        finally:
            for fd in fds:
                os.close(fd)
        try:
            return self._supervise(proc, groups, status_r, stdin, start + timeout, start, token)
        finally:
            if groups is not None:
                groups.remove()

    def _supervise(self, proc: subprocess.Popen, groups: cgroup.RunCgroups | None, status_r: int | None,
                   stdin: bytes, deadline: float, start: float, token: str) -> ProcessRun:
        """Join the cgroups, release the process (stdin), collect, kill what is left, reap."""
        cfg = self.config
        try:
            if groups is not None:
                groups.join(proc.pid)  # before stdin: the driver starts nothing untrusted until it reads it
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        except OSError:
            pass  # it died before reading (or a cgroup refused it): the status pipe tells the rest
        out, err, status, timed_out = collect(proc, status_r, deadline, cfg.max_output_bytes, cfg.max_result_bytes)
        if not timed_out:  # the pipes closed; the exit itself may still be on its way
            timed_out = not procs.wait_exit_nowait(proc.pid, max(0.0, deadline - time.monotonic()))
        if timed_out:
            procs.kill_below(proc.pid)  # the program first, so that bwrap reaps it (no zombie)
        procs.kill_group(proc.pid)  # leader unreaped: its pgid and sid cannot have been reused
        if timed_out or not self.isolation.pid_namespace:  # else the pid namespace took them all
            procs.sweep(proc.pid, token)
        returncode = proc.wait()
        duration = time.monotonic() - start
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        peak = groups.memory_peak() if groups is not None else None
        oom = groups.oom_killed() if groups is not None else False
        return ProcessRun(returncode, out, err, status.data, timed_out, duration, token, peak, oom)

    # ----- verdicts ------------------------------------------------------------------------
    def _result(self, raw: ProcessRun, nonce: bytes, plan: trusted.TrustedPlan | None) -> SandboxResult:
        backend = self.isolation.backend.value
        source = VerdictSource.TRUSTED if plan is not None else VerdictSource.IN_PROCESS
        if raw.start_error is not None:
            return SandboxResult(Status.ERROR, None, "", raw.start_error, raw.duration_s, False, backend=backend,
                                 run_id=raw.run_id, verdict_source=source)
        status, returncode = raw.status, raw.returncode
        assert returncode is not None
        started = status[:1] == b"S"
        end = b"P" + nonce
        if plan is None:
            sentinel = status == b"S" + end
            tests_ok, counts, failures = True, (None, None), ()
        else:
            sentinel = started and status.endswith(b"\n" + end) or status == b"S" + end
            values = judge.parse_records(status[1:], len(plan.calls)) if started else []
            outcomes = judge.judge(plan, values)
            tests_ok = all(o.passed for o in outcomes)
            counts = (len(outcomes), sum(o.passed for o in outcomes))
            failures = tuple(f"test {i}: {o.why}" for i, o in enumerate(outcomes) if not o.passed)[:20]
        signum = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
        cpu_killed = signum in (signal.SIGXCPU, signal.SIGKILL) and raw.duration_s >= self.config.effective_cpu_s
        if raw.timed_out or (cpu_killed and started and not sentinel and not raw.oom_killed):
            verdict = Status.TIMEOUT
        elif sentinel and returncode == 0 and tests_ok:
            verdict = Status.PASSED
        elif not started:
            verdict = Status.ERROR  # the driver never ran: the sandbox failed, not the program
        else:
            verdict = Status.FAILED
        return SandboxResult(verdict, returncode, raw.stdout.text(), raw.stderr.text(), raw.duration_s, sentinel,
                             raw.stdout.truncated, raw.stderr.truncated, backend, raw.run_id, source, counts[0],
                             counts[1], failures, raw.memory_peak_bytes, raw.oom_killed)


_found: dict[str, tuple[cgroup.Hierarchy | None, str]] = {}


def _cached_find(controller: str) -> tuple[cgroup.Hierarchy | None, str]:
    if controller not in _found:
        _found[controller] = cgroup.find(controller)
    return _found[controller]

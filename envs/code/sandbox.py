"""Run untrusted Python in an isolated process and tell PASS from everything else.

Each run gets a fresh interpreter (``python -I -S -B``) started through the best isolation
the kernel allows (see ``mcts_agent.envs.code.isolation``), in a new session with rlimits on CPU,
address space, processes, file size and open files (core dumps off), a scrubbed
environment, a scratch directory as cwd and HOME, capped output, and a wall-clock timeout
that kills the whole process group and sweeps up escaped children. PASSED needs a
per-run nonce that only the trusted driver writes after the program ran to its end.

    box = Sandbox(SandboxConfig(timeout_s=5))
    result = box.run("assert 1 + 1 == 2")
    result.status is Status.PASSED
"""

from __future__ import annotations

import enum
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from mcts_agent.envs.code import isolation as iso
from mcts_agent.envs.code import procs
from mcts_agent.errors import ConfigError, EnvError

DRIVER_SOURCE = Path(__file__).with_name("_driver.py").read_text()
_MB = 1 << 20


class SandboxUnavailableError(EnvError):
    """The isolation the config requires is not available on this machine."""


class Status(str, enum.Enum):
    """How a sandboxed run ended."""

    PASSED = "passed"  # ran to its end, exit 0, and the driver's nonce was seen
    FAILED = "failed"  # raised, exited early, crashed or hit a limit other than time
    TIMEOUT = "timeout"  # wall clock or CPU time ran out
    ERROR = "error"  # the sandbox itself could not start the program


@dataclass(frozen=True)
class SandboxResult:
    """The outcome of one run. Output is decoded with ``errors='replace'`` and capped."""

    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    sentinel_seen: bool
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    backend: str = ""
    run_id: str = ""  # the MCTS_SANDBOX_ID every process of the run carried (not a secret)

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED


@dataclass
class SandboxConfig:
    """Limits and isolation for sandboxed runs; validated on construction."""

    timeout_s: float = field(default=10.0, metadata={"help": "wall-clock limit per run, seconds"})
    cpu_s: int | None = field(default=None, metadata={"help": "CPU-time rlimit; None = ceil(timeout_s)"})
    memory_mb: int = field(default=1024, metadata={"help": "address-space rlimit (RLIMIT_AS), MiB"})
    max_processes: int = field(default=32, metadata={"help": "RLIMIT_NPROC (processes + threads)"})
    max_file_mb: int = field(default=16, metadata={"help": "largest file the program may write, MiB"})
    max_open_files: int = field(default=64, metadata={"help": "RLIMIT_NOFILE"})
    scratch_mb: int = field(default=64, metadata={"help": "size of each writable tmpfs (bwrap), MiB"})
    max_output_bytes: int = field(default=64_000, metadata={"help": "stdout/stderr kept per stream"})
    isolation: str = field(default="auto", metadata={"help": "auto | bwrap | unshare | none"})
    require_isolation: bool = field(default=True, metadata={
        "help": "refuse to run unless bubblewrap gives a read-only host fs, no network and a pid namespace"})
    allow_network: bool = field(default=False, metadata={"help": "let the program reach the network"})
    python: str | None = field(default=None, metadata={
        "help": "interpreter to run; None = this one, or the system's same version if the sandbox user cannot"})
    run_as_uid: int | None = field(default=None, metadata={
        "help": "uid (and gid) to run as; None = 65534 (nobody) when root, else the current user"})
    bwrap_path: str | None = field(default=None, metadata={"help": "bubblewrap binary; None = PATH"})
    unshare_path: str | None = field(default=None, metadata={"help": "util-linux unshare; None = PATH"})
    extra_ro_paths: tuple[str, ...] = field(default=(), metadata={"help": "more host paths to bind read-only"})
    work_dir: str | None = field(default=None, metadata={"help": "host dir for per-run temp dirs"})

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ConfigError:
            return ConfigError(f"SandboxConfig.{name} must be {expected}, got {getattr(self, name)!r}")

        if not (isinstance(self.timeout_s, (int, float)) and 0 < self.timeout_s <= 3600):
            raise bad("timeout_s", "a number of seconds in (0, 3600]")
        if self.cpu_s is not None and not (isinstance(self.cpu_s, int) and self.cpu_s >= 1):
            raise bad("cpu_s", "None or an int >= 1")
        for name, low in (("memory_mb", 64), ("max_processes", 1), ("max_file_mb", 1),
                          ("max_open_files", 16), ("scratch_mb", 1), ("max_output_bytes", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise bad(name, f"an int >= {low}")
        if self.isolation not in ("auto", *(b.value for b in iso.Backend)):
            raise bad("isolation", "one of 'auto', 'bwrap', 'unshare', 'none'")
        if self.isolation == "none" and self.require_isolation:
            raise ConfigError("SandboxConfig.isolation='none' needs require_isolation=False (it isolates nothing)")
        for name in ("require_isolation", "allow_network"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "a bool")
        if self.run_as_uid is not None and not (isinstance(self.run_as_uid, int) and self.run_as_uid > 0):
            raise bad("run_as_uid", "None or a uid > 0 (never root)")
        if self.run_as_uid is not None and os.geteuid() != 0 and self.run_as_uid != os.geteuid():
            raise ConfigError(f"SandboxConfig.run_as_uid={self.run_as_uid} needs root; this process runs "
                              f"as uid {os.geteuid()} (leave it None)")
        self.extra_ro_paths = tuple(self.extra_ro_paths)
        for p in self.extra_ro_paths:
            if not os.path.isabs(p):
                raise ConfigError(f"SandboxConfig.extra_ro_paths entries must be absolute paths, got {p!r}")

    @property
    def effective_cpu_s(self) -> int:
        return self.cpu_s if self.cpu_s is not None else max(1, math.ceil(self.timeout_s))

    def replace(self, **changes: object) -> "SandboxConfig":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return SandboxConfig(**values)  # type: ignore[arg-type]


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
        self.isolation = self._select()

    def describe(self) -> str:
        """One line saying what protects a run: backend, user and interpreter."""
        who = "the current user" if self.run_as is None else f"uid {self.run_as}"
        return f"{self.isolation.detail}; runs as {who}; interpreter {self.python}"

    # ----- choosing the interpreter and the backend -----------------------------------
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
            why = iso.probe(backend, tool=tool, python=self.python, run_as=self.run_as,
                            allow_network=cfg.allow_network)
            if why is not None:
                reasons.append(f"{backend.value}: {why}")
                continue
            chosen = iso.describe(backend, cfg.allow_network)
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

    # ----- running --------------------------------------------------------------------
    def run(self, program: str, *, tests: str | None = None, as_main: bool = True,
            timeout_s: float | None = None, run_id: str | None = None) -> SandboxResult:
        """Run ``program`` (Python source), then ``tests`` if given, and classify the outcome.

        ``tests`` run after the program, in their own namespace with the program's names and
        unpatched builtins. ``as_main`` runs the code as ``__main__`` (a main block runs);
        test harnesses pass False, like HumanEval's reference harness. ``run_id`` (random if
        None) is put in every process's environment as MCTS_SANDBOX_ID, to find them.
        """
        if run_id is not None and not (isinstance(run_id, str) and run_id.isalnum() and len(run_id) >= 16):
            raise EnvError(f"run_id must be None or an alphanumeric str of >= 16 characters, got {run_id!r}")
        for name, value in (("program", program), ("tests", tests)):
            if not isinstance(value, str) and not (name == "tests" and value is None):
                raise EnvError(f"{name} must be Python source as a str, got {type(value).__name__}")
        cfg = self.config
        timeout = cfg.timeout_s if timeout_s is None else timeout_s
        if not timeout > 0:
            raise EnvError(f"timeout_s must be > 0 seconds, got {timeout!r}")
        host_dir = tempfile.mkdtemp(prefix="mcts-sandbox-", dir=cfg.work_dir)
        try:
            return self._run_in(host_dir, program, tests, as_main, timeout, run_id or secrets.token_hex(16))
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

    def _command(self, layout: iso.Layout, status_fd: int, as_main: bool, tests: bool) -> list[str]:
        cfg, backend = self.config, self.isolation.backend
        limits = ",".join(str(v) for v in (cfg.effective_cpu_s, cfg.memory_mb * _MB, cfg.max_processes,
                                           cfg.max_file_mb * _MB, cfg.max_open_files))
        inner = [self.python, "-I", "-S", "-B", "-c", DRIVER_SOURCE, layout.program_path, str(status_fd),
                 limits, "__main__" if as_main else "__sandboxed__",
                 os.path.join(os.path.dirname(layout.program_path), "tests.py") if tests else "-"]
        if backend is iso.Backend.BWRAP:
            assert self._bwrap is not None
            return iso.bwrap_prefix(self._bwrap, layout, python_dirs=self._python_dirs,
                                    scratch_bytes=cfg.scratch_mb * _MB, allow_network=cfg.allow_network,
                                    extra_ro=cfg.extra_ro_paths) + inner
        if backend is iso.Backend.UNSHARE:
            assert self._unshare is not None
            return iso.unshare_prefix(self._unshare, allow_network=cfg.allow_network) + inner
        return inner

    def _run_in(self, host_dir: str, program: str, tests: str | None, as_main: bool, timeout: float,
                token: str) -> SandboxResult:
        layout = self._layout(host_dir)
        for name, text in (("program.py", program), ("tests.py", tests)):
            if text is not None:
                with open(os.path.join(host_dir, name), "w", encoding="utf-8") as f:
                    f.write(text)
        os.chmod(host_dir, 0o755)  # the sandbox user must read program.py
        nonce = secrets.token_hex(16).encode()
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": layout.scratch,
               "TMPDIR": layout.scratch, procs.TOKEN_VAR: token}
        status_r, status_w = os.pipe()
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                self._command(layout, status_w, as_main, tests is not None), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(status_w,), env=env,
                cwd=layout.host_scratch or host_dir, start_new_session=True,
                **iso.popen_user(self.run_as))  # type: ignore[arg-type]
        except OSError as e:
            os.close(status_r)
            return SandboxResult(Status.ERROR, None, "", f"could not start the sandbox: {e}",
                                 time.monotonic() - start, False, backend=self.isolation.backend.value,
                                 run_id=token)
        finally:
            os.close(status_w)
        try:
            assert proc.stdin is not None
            proc.stdin.write(nonce + b"\n")
            proc.stdin.close()
        except OSError:
            pass  # it died before reading; the status pipe tells the rest
        deadline = start + timeout
        out, err, status, timed_out = self._collect(proc, status_r, deadline)
        if not timed_out:  # the pipes closed; the exit itself may still be on its way
            timed_out = not procs.wait_exit_nowait(proc.pid, max(0.0, deadline - time.monotonic()))
        procs.kill_group(proc.pid)  # leader unreaped: its pgid and sid cannot have been reused
        if timed_out or not self.isolation.pid_namespace:  # else the pid namespace took them all
            procs.sweep(proc.pid, token)
        returncode = proc.wait()
        duration = time.monotonic() - start
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        result = self._result(returncode, out, err, status.data, nonce, timed_out, duration)
        return replace(result, run_id=token)

    def _collect(self, proc: subprocess.Popen, status_r: int, deadline: float
                 ) -> tuple["_Capped", "_Capped", "_Capped", bool]:
        """Read stdout, stderr and the status pipe until all close, the program exits, or time runs out."""
        cap = self.config.max_output_bytes
        assert proc.stdout is not None and proc.stderr is not None
        streams = {proc.stdout.fileno(): _Capped(cap), proc.stderr.fileno(): _Capped(cap), status_r: _Capped(1024)}
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
                if exit_seen_at is None and procs.exited_nowait(proc.pid):
                    exit_seen_at = now  # a leftover child may hold the pipes: give it a moment, then stop
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
            os.close(status_r)
        return streams[proc.stdout.fileno()], streams[proc.stderr.fileno()], streams[status_r], timed_out

    def _result(self, returncode: int, out: "_Capped", err: "_Capped", status: bytes, nonce: bytes,
                timed_out: bool, duration: float) -> SandboxResult:
        started = status[:1] == b"S"
        sentinel = status == b"S" + b"P" + nonce
        signum = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
        cpu_killed = signum in (signal.SIGXCPU, signal.SIGKILL) and duration >= self.config.effective_cpu_s
        if timed_out or (cpu_killed and started and not sentinel):
            verdict = Status.TIMEOUT
        elif sentinel and returncode == 0:
            verdict = Status.PASSED
        elif not started:
            verdict = Status.ERROR  # the driver never ran: the sandbox failed, not the program
        else:
            verdict = Status.FAILED
        return SandboxResult(verdict, returncode, out.text(), err.text(), duration, sentinel,
                             out.truncated, err.truncated, self.isolation.backend.value)


class _Capped:
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

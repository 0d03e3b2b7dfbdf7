"""The sandbox's configuration and results (see ``mcts_agent.envs.code.sandbox``)."""

from __future__ import annotations

import enum
import math
import os
from dataclasses import dataclass, field, fields

from mcts_agent.envs.code import isolation as iso
from mcts_agent.errors import ConfigError, EnvError



class SandboxUnavailableError(EnvError):
    """The isolation the config requires is not available on this machine."""


class Status(str, enum.Enum):
    """How a sandboxed run ended."""

    PASSED = "passed"  # ran to its end, exit 0, and the driver's nonce was seen
    FAILED = "failed"  # raised, exited early, crashed or hit a limit other than time
    TIMEOUT = "timeout"  # wall clock or CPU time ran out
    ERROR = "error"  # the sandbox itself could not start the program


class VerdictSource(str, enum.Enum):
    """Who decided PASSED: how much a verdict can be trusted.

    ``TRUSTED``: the framework compared the program's outputs with expected values the
    sandbox never saw; no byte the program wrote was executed or believed beyond being data.
    ``IN_PROCESS``: the tests (or the bare program) ran inside the sandboxed interpreter and a
    nonce the driver writes at the end says they finished; a program that reads its own
    process's memory can forge that, so this verdict is only as good as the program is honest.
    """

    TRUSTED = "trusted"
    IN_PROCESS = "in-process"


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
    verdict_source: VerdictSource = VerdictSource.IN_PROCESS
    tests_total: int | None = None  # trusted verdicts: how many checks (asserts) there were
    tests_passed: int | None = None  # ... and how many of them passed
    test_failures: tuple[str, ...] = ()  # "test 3: wrong value" (never an expected value)
    memory_peak_bytes: int | None = None  # from the run's memory cgroup, where there is one
    oom_killed: bool = False  # the memory cgroup's limit killed a process of the run

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
    max_result_bytes: int = field(default=4 << 20, metadata={
        "help": "bytes of test-call results kept (trusted verdicts); results past it count as missing"})
    warm: bool = field(default=False, metadata={
        "help": "fork each run from a warm interpreter in a long-lived bwrap sandbox (see warm.py); "
                "falls back to cold starts where that is not safe"})
    memory_cgroup: str = field(default="auto", metadata={
        "help": "auto (a per-run memory+pids cgroup where the machine allows one, else rlimits only) | "
                "require | off"})
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
                          ("max_open_files", 16), ("scratch_mb", 1), ("max_output_bytes", 1),
                          ("max_result_bytes", 1024)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise bad(name, f"an int >= {low}")
        if self.isolation not in ("auto", *(b.value for b in iso.Backend)):
            raise bad("isolation", "one of 'auto', 'bwrap', 'unshare', 'none'")
        if self.isolation == "none" and self.require_isolation:
            raise ConfigError("SandboxConfig.isolation='none' needs require_isolation=False (it isolates nothing)")
        if self.memory_cgroup not in ("auto", "require", "off"):
            raise bad("memory_cgroup", "one of 'auto', 'require', 'off'")
        for name in ("require_isolation", "allow_network", "warm"):
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



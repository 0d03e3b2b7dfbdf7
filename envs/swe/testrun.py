"""Test runs of a working copy in the sandbox, and the per-project virtualenv they use.

Every run is ``python -m pytest -rA`` inside ``Sandbox.run_command``: no network, the
sandbox's CPU/memory/process/time limits, the working copy bound read-only at ``/repo``
and the project's virtualenv bound read-only at ``/venv`` (bytecode and pytest's cache
are not written; a test's temp files go to the sandbox's scratch). The report is the
``-rA`` summary, read by ``parse_pytest_report``.

``prepare_venv`` builds one venv per project (pytest and the project's test
dependencies), once, in a cache folder keyed by what it holds: shared venvs break (test
plugins, shadowed packages).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mcts_agent.envs.code import isolation as iso
from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig
from mcts_agent.errors import EnvError

STATUSES = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
_LINE = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (.+)$")
DEFAULT_PYTEST = "pytest==9.2.0"


def parse_pytest_report(log: str) -> dict[str, str]:
    """``{test id: status}`` from pytest's ``-rA`` short summary (the last status of an id wins).

    ``FAILED id - message`` and ``XFAIL id - reason`` lose their message; ``SKIPPED [N] file:line``
    summaries name no test and are left out.
    """
    out: dict[str, str] = {}
    for line in log.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        status, rest = m.groups()
        if status == "SKIPPED" and rest.startswith("["):
            continue
        test = rest.split(" - ", 1)[0].strip() if status != "PASSED" else rest.strip()
        if status == "XPASS" and " " in test:
            test = test.split(" ", 1)[0]
        if test:
            out[test] = status
    return out


@dataclass(frozen=True)
class PytestRun:
    """One sandboxed pytest run."""

    log: str  # stdout + stderr (capped by the sandbox)
    statuses: dict[str, str]
    returncode: int | None
    timed_out: bool
    seconds: float

    @property
    def ran(self) -> bool:
        """Whether pytest reported any test at all."""
        return bool(self.statuses)


def python_path(worktree: str, inside: str = "/repo") -> str:
    """PYTHONPATH for a project: its ``src/`` layout folder when it has one, and its root."""
    parts = [f"{inside}/src"] if os.path.isdir(os.path.join(worktree, "src")) else []
    return ":".join(parts + [inside])


class PytestRunner:
    """Runs pytest for working copies of one project in the sandbox."""

    def __init__(self, venv: str, *, sandbox: Sandbox | SandboxConfig | None = None, timeout_s: float = 60.0,
                 pytest_args: Sequence[str] = ()) -> None:
        if not os.path.isfile(os.path.join(venv, "bin", "python")):
            raise EnvError(f"no virtualenv at {venv!r} (expected {venv}/bin/python); build one with prepare_venv")
        self.venv = os.path.realpath(venv)
        if isinstance(sandbox, Sandbox):
            self.sandbox, self._own = sandbox, False
        else:
            cfg = sandbox or SandboxConfig(timeout_s=timeout_s, memory_mb=2048, max_processes=64, max_open_files=256,
                                           max_file_mb=64)
            self.sandbox, self._own = Sandbox(cfg), True
        run_as = self.sandbox.run_as
        if run_as is not None and run_as != os.geteuid() and not iso.reachable(self.venv, run_as):
            raise EnvError(f"the sandbox user (uid {run_as}) cannot reach the virtualenv {self.venv!r}; "
                           f"put it under a world-traversable folder (MCTS_AGENT_CACHE)")
        base = _venv_base(self.venv)
        if base is not None and os.path.realpath(base) != os.path.realpath(self.sandbox.python):
            raise EnvError(f"the virtualenv {self.venv!r} is built on {base}, but the sandbox runs "
                           f"{self.sandbox.python}; build it with prepare_venv(python=sandbox.python)")
        self.timeout_s = timeout_s
        self.pytest_args = tuple(pytest_args)

    def run(self, worktree: str, tests: Sequence[str] = (), *, timeout_s: float | None = None) -> PytestRun:
        """Run ``tests`` (pytest ids or paths; none: the whole suite) in ``worktree``."""
        args = ["-rA", "-p", "no:cacheprovider", "-o", "console_output_style=classic", *self.pytest_args, *tests]
        inner = (f"cd /repo && exec /usr/bin/env PYTHONPATH={python_path(worktree)} PYTHONDONTWRITEBYTECODE=1 COLUMNS=200 "
                 f"/venv/bin/python -B -m pytest {' '.join(shlex.quote(a) for a in args)}")
        run = self.sandbox.run_command(["/bin/sh", "-c", inner], ro_binds=[(self.venv, "/venv"), (worktree, "/repo")],
                                       timeout_s=timeout_s or self.timeout_s)
        if run.start_error:
            raise EnvError(f"the sandbox could not start pytest: {run.start_error}")
        log = run.stdout.text() + run.stderr.text()
        return PytestRun(log, parse_pytest_report(log), run.returncode, run.timed_out, run.duration_s)

    def close(self) -> None:
        if self._own:
            self.sandbox.close()


def _venv_base(venv: str) -> str | None:
    cfg = Path(venv) / "pyvenv.cfg"
    if not cfg.is_file():
        return None
    for line in cfg.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "executable":
            return value.strip()
    return None


def default_cache() -> Path:
    """Where venvs and prepared repositories live: ``$MCTS_AGENT_CACHE/swe``, else a folder under
    /var/tmp (the sandbox user must reach the venv, and home folders are often private)."""
    root = os.environ.get("MCTS_AGENT_CACHE") or os.path.join("/var/tmp", f"mcts-agent-{os.geteuid()}")
    return Path(root) / "swe"


def prepare_venv(requirements: Sequence[str] = (DEFAULT_PYTEST,), *, cache_dir: str | os.PathLike[str] | None = None,
                 python: str | None = None) -> str:
    """A virtualenv holding ``requirements`` (pip specifiers), built once and reused (keyed by them),
    on ``python`` (default: the interpreter the default sandbox runs, which must be the venv's base)."""
    reqs = sorted(set(requirements))
    if python is None:
        with Sandbox(SandboxConfig()) as box:
            python = box.python
    base = _base_python(python)
    key = hashlib.sha256(json.dumps([reqs, base]).encode()).hexdigest()[:16]
    root = Path(cache_dir) if cache_dir is not None else default_cache() / "venvs"
    venv = root / key
    done = venv / ".mcts-agent-ready"
    if done.is_file():
        return str(venv)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.building-{os.getpid()}"
    subprocess.run([base, "-m", "venv", "--clear", str(tmp)], check=True, capture_output=True)
    proc = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           *reqs], capture_output=True, text=True)
    if proc.returncode != 0:
        raise EnvError(f"cannot build a virtualenv with {reqs}: {proc.stderr.strip()[-800:]}")
    # The venv moves into place: its scripts' shebangs would name the temp path, so runs use `python -m`.
    (tmp / ".mcts-agent-ready").write_text(json.dumps({"requirements": reqs, "python": base}) + "\n")
    try:
        os.rename(tmp, venv)
    except OSError:  # another process built it first
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    for d in (root, venv):
        os.chmod(d, 0o755)
    return str(venv)


def _base_python(python: str) -> str:
    """The interpreter a venv is made from (a venv's own base, so venvs never nest)."""
    out = subprocess.run([python, "-c", "import sys; print(sys._base_executable)"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return os.path.realpath(out)

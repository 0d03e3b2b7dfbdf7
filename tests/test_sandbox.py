"""The sandbox's contract: config validation, verdicts, environment, cleanup, the pool."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from mcts_agent.envs.code import isolation as iso
from mcts_agent.envs.code.pool import SandboxPool
from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError, Status
from mcts_agent.errors import ConfigError, EnvError


@pytest.fixture(scope="module")
def box() -> Sandbox:
    try:
        return Sandbox(SandboxConfig(timeout_s=5.0, memory_mb=512))
    except SandboxUnavailableError as e:
        pytest.skip(f"full sandbox isolation not available here: {e}")


# ----- configuration --------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"timeout_s": 0}, "SandboxConfig.timeout_s must be a number of seconds in (0, 3600], got 0"),
    ({"memory_mb": 10}, "SandboxConfig.memory_mb must be an int >= 64, got 10"),
    ({"max_processes": 0}, "SandboxConfig.max_processes must be an int >= 1, got 0"),
    ({"cpu_s": 0}, "SandboxConfig.cpu_s must be None or an int >= 1, got 0"),
    ({"isolation": "docker"},
     "SandboxConfig.isolation must be one of 'auto', 'bwrap', 'unshare', 'none', got 'docker'"),
    ({"isolation": "none"}, "SandboxConfig.isolation='none' needs require_isolation=False (it isolates nothing)"),
    ({"run_as_uid": 0}, "SandboxConfig.run_as_uid must be None or a uid > 0 (never root), got 0"),
    ({"extra_ro_paths": ("relative",)}, "SandboxConfig.extra_ro_paths entries must be absolute paths, got 'relative'"),
])
def test_bad_config_is_refused_with_a_clear_message(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        SandboxConfig(**kwargs)
    assert str(e.value) == message


def test_missing_isolation_is_refused_unless_opted_out(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-tool")
    with pytest.raises(SandboxUnavailableError) as e:
        Sandbox(SandboxConfig(bwrap_path=missing, unshare_path=missing))
    text = str(e.value)
    assert "bwrap: the 'bwrap' executable was not found" in text
    assert "install bubblewrap (scripts/install_system_deps.sh)" in text and "require_isolation=False" in text
    with pytest.raises(SandboxUnavailableError, match="cannot cut the network"):
        Sandbox(SandboxConfig(bwrap_path=missing, unshare_path=missing, require_isolation=False))
    bare = Sandbox(SandboxConfig(bwrap_path=missing, unshare_path=missing, require_isolation=False,
                                 allow_network=True, timeout_s=5.0))
    assert bare.isolation.backend is iso.Backend.NONE and not bare.isolation.readonly_host_fs
    assert bare.run("assert 1 + 1 == 2").status is Status.PASSED


def test_bad_program_type_is_refused(box: Sandbox) -> None:
    with pytest.raises(EnvError, match="program must be Python source as a str, got bytes"):
        box.run(b"print(1)")  # type: ignore[arg-type]


# ----- verdicts -------------------------------------------------------------------------
@pytest.mark.parametrize("program, status", [
    ("assert sum([1, 2]) == 3\n", Status.PASSED),
    ("assert sum([1, 2]) == 4\n", Status.FAILED),
    ("def f(:\n", Status.FAILED),
    ("import sys\nsys.exit(0)\n", Status.FAILED),
    ("import sys\nsys.exit(3)\n", Status.FAILED),
])
def test_verdicts(box: Sandbox, program: str, status: Status) -> None:
    result = box.run(program)
    assert result.status is status
    assert result.sentinel_seen is (status is Status.PASSED)


def test_cpu_limit_gives_timeout(box: Sandbox) -> None:
    sandbox = Sandbox(box.config.replace(timeout_s=20.0, cpu_s=1))
    result = sandbox.run("while True:\n    pass\n")
    assert result.status is Status.TIMEOUT and result.duration_s < 20.0


def test_as_main_controls_the_main_block(box: Sandbox) -> None:
    prog = "if __name__ == '__main__':\n    raise SystemExit(5)\n"
    assert box.run(prog).returncode == 5
    assert box.run(prog, as_main=False).status is Status.PASSED


def test_scrubbed_environment_and_scratch_home(box: Sandbox) -> None:
    prog = ("import os\nallowed = {'PATH', 'LANG', 'HOME', 'TMPDIR', 'MCTS_SANDBOX_ID', 'LC_CTYPE', 'PWD'}\n"
            "assert set(os.environ) <= allowed, dict(os.environ)\n"
            "assert os.getcwd() == os.environ['HOME'] == os.path.expanduser('~')\n"
            "open('note.txt', 'w').write('ok')\nassert os.getuid() != 0\n")
    result = box.run(prog)
    assert result.status is Status.PASSED, result.stderr


def test_per_run_directories_are_removed(box: Sandbox) -> None:
    work = Path(tempfile.mkdtemp(prefix="mcts-sandbox-test-"))
    try:
        work.chmod(0o755)  # the sandbox user must reach it
        sandbox = Sandbox(box.config.replace(work_dir=str(work)))
        assert sandbox.run("open('x', 'w').write('y')").status is Status.PASSED
        assert sandbox.run("while True:\n    pass\n", timeout_s=0.5).status is Status.TIMEOUT
        assert list(work.iterdir()) == []
    finally:
        shutil.rmtree(work)


def test_unreachable_work_dir_is_refused(box: Sandbox, tmp_path: Path) -> None:
    if box.run_as is None:
        pytest.skip("the sandbox runs as the current user, who reaches every directory it made")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="must be reachable by the sandbox user"):
        Sandbox(box.config.replace(work_dir=str(private)))


def test_each_run_starts_from_a_fresh_scratch(box: Sandbox) -> None:
    assert box.run("open('left-behind', 'w').write('x')").status is Status.PASSED
    assert box.run("import os\nassert not os.path.exists('left-behind')").status is Status.PASSED


# ----- the pool -------------------------------------------------------------------------
def test_pool_keeps_input_order(box: Sandbox) -> None:
    programs = [f"import time\ntime.sleep({0.3 if i % 2 == 0 else 0})\nprint({i})\n" for i in range(6)]
    programs[3] = "assert False\n"
    with SandboxPool(box, max_workers=3) as pool:
        start = time.monotonic()
        results = pool.run_many(programs)
        elapsed = time.monotonic() - start
    assert [r.stdout.strip() for r in results] == ["0", "1", "2", "", "4", "5"]
    assert [r.status for r in results] == [Status.PASSED] * 3 + [Status.FAILED] + [Status.PASSED] * 2
    assert elapsed < 6 * 0.3 + 30  # ran, and finished (timings themselves are benchmarks' job)


def test_pool_validates_its_input(box: Sandbox) -> None:
    with pytest.raises(ConfigError, match="max_workers must be an int >= 1, got 0"):
        SandboxPool(box, max_workers=0)
    pool = SandboxPool(box, max_workers=2)
    with pytest.raises(EnvError, match="got a single str"):
        pool.run_many("print(1)")  # type: ignore[arg-type]
    with pytest.raises(EnvError, match="2 programs but 1 tests"):
        pool.run_many(["pass", "pass"], tests=["pass"])
    assert pool.run_many([]) == []


@pytest.mark.parametrize("backend", ["unshare", "none"])
def test_weaker_backends_still_run_and_kill(backend: str) -> None:
    config = SandboxConfig(isolation=backend, require_isolation=False, allow_network=backend == "none",
                           timeout_s=1.0, memory_mb=256, max_processes=16)
    try:
        sandbox = Sandbox(config)
    except SandboxUnavailableError as e:
        pytest.skip(str(e))
    assert sandbox.isolation.readonly_host_fs is False
    assert sandbox.run("assert True").status is Status.PASSED
    assert sandbox.run("import os\nos._exit(0)").status is Status.FAILED
    assert sandbox.run("import time\ntime.sleep(60)").status is Status.TIMEOUT


# ----- the general primitive (for layers such as a SWE env) -----------------------------
def test_run_command_with_a_writable_repo_and_a_read_only_venv(box: Sandbox) -> None:
    if box.isolation.backend is not iso.Backend.BWRAP:
        pytest.skip("binds need the bwrap backend")
    tmp_path = Path(tempfile.mkdtemp(prefix="mcts-sandbox-test-"))  # reachable by the sandbox user
    try:
        _run_command_checks(box, tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _run_command_checks(box: Sandbox, tmp_path: Path) -> None:
    repo, venv = tmp_path / "repo", tmp_path / "venv"
    repo.mkdir()
    venv.mkdir()
    (repo / "mod.py").write_text("X = 1\n")
    (venv / "tool.txt").write_text("read me\n")
    tmp_path.chmod(0o755)
    for path in (repo, venv):
        path.chmod(0o755)
    if box.run_as is not None:  # the scratch copy belongs to the sandbox user
        for path in (repo, repo / "mod.py"):
            os.chown(path, box.run_as, box.run_as)
    script = ("cat /venv/tool.txt; echo patched > /repo/mod.py; "
              "(echo x > /venv/tool.txt) 2>/dev/null && echo VENV-WRITABLE; exit 3")
    run = box.run_command(["/bin/sh", "-c", script], ro_binds=[(str(venv), "/venv")],
                          rw_binds=[(str(repo), "/repo")], timeout_s=10.0)
    assert run.returncode == 3 and not run.timed_out, run.stderr.text()
    assert run.stdout.text() == "read me\n"
    assert (repo / "mod.py").read_text() == "patched\n" and (venv / "tool.txt").read_text() == "read me\n"

"""Soak: 100 runs of every kind leave nothing behind (processes, zombies, fds, temp dirs, cgroups)."""

from __future__ import annotations

import glob
import json
import os
import secrets
import tempfile
import time
import shutil
from pathlib import Path

import pytest

from mcts_agent.benchmarks.sandbox_soak import PROGRAMS, cgroup_dirs, main, zombies_under
from mcts_agent.envs.code.pool import SandboxPool
from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError, Status

def sandbox_processes(prefix: str) -> list[int]:
    needle = f"MCTS_SANDBOX_ID={prefix}".encode()
    found = []
    for env_path in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(env_path, "rb") as f:
                if needle in f.read():
                    found.append(int(env_path.split("/")[2]))
        except OSError:
            pass
    return found


def soak_cgroups() -> list[str]:
    return cgroup_dirs("mcts-sandbox-soak*")


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_one_hundred_runs_leave_nothing_behind(warm: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="mcts-soak-"))
    work.chmod(0o755)
    try:
        try:
            box = Sandbox(SandboxConfig(timeout_s=0.5, memory_mb=256, max_processes=16, scratch_mb=4,
                                        work_dir=str(work), warm=warm))
        except SandboxUnavailableError as e:
            pytest.skip(f"full sandbox isolation not available here: {e}")
        prefix = "soak" + secrets.token_hex(4)
        box.run("pass")  # warm: first-use costs (probes, imports) are not leaks
        fds_before = len(os.listdir("/proc/self/fd"))
        zombies_before = set(zombies_under({1, os.getpid()}))
        statuses = []
        with SandboxPool(box, max_workers=2) as pool:  # half one by one (with run ids), half in parallel
            for round_ in range(10):
                jobs = PROGRAMS
                results = [box.run(p, tests=t, as_main=t is None, run_id=f"{prefix}{round_}x{i}" + "0" * 8)
                           for i, (p, t, _) in enumerate(jobs[:5])]
                results += pool.run_many([p for p, _, _ in jobs[5:]], tests=[t for _, t, _ in jobs[5:]])
                statuses += [(r.status, want) for r, (_, _, want) in zip(results, jobs)]
                assert sandbox_processes(prefix) == []  # cold runs (warm ones carry the id only in os.environ)
                assert set(zombies_under({1, os.getpid()})) - zombies_before == set()
        assert len(statuses) == 100
        assert [s for s, _ in statuses] == [w for _, w in statuses]
        assert len(os.listdir("/proc/self/fd")) <= fds_before + (4 if warm else 0)  # a 2nd zygote: 2 sockets
        assert list(work.iterdir()) == []  # a zygote's directory goes once its sandbox has bound it
        assert soak_cgroups() == []
        box.close()
        assert list(work.iterdir()) == [] and len(os.listdir("/proc/self/fd")) <= fds_before
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_no_state_crosses_runs(warm: bool) -> None:
    try:
        box = Sandbox(SandboxConfig(timeout_s=5.0, memory_mb=256, max_processes=16, scratch_mb=4, warm=warm))
    except SandboxUnavailableError as e:
        pytest.skip(f"full sandbox isolation not available here: {e}")
    if warm and not box.warm:
        pytest.skip("warm starts are not safe here")
    marker = secrets.token_hex(8)
    leave = (f"import os, sys, builtins, subprocess\n"
             f"for d in ('/tmp', '/dev/shm', os.getcwd()):\n    open(os.path.join(d, {marker!r}), 'w').write('x')\n"
             f"os.makedirs('locked/inner')\nos.chmod('locked', 0)\n"
             f"builtins.LEFT = 1\nos.environ['LEFT'] = '1'\nsys.setrecursionlimit(123)\nsys.modules['json'] = None\n"
             f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)', {marker!r}], start_new_session=True)\n")
    look = (f"import os, sys, builtins\n"
            f"files = [d for d in ('/tmp', '/dev/shm', os.getcwd()) if os.path.exists(os.path.join(d, {marker!r}))]\n"
            f"daemons = [p for p in os.listdir('/proc') if p.isdigit() and {marker!r}.encode() in "
            f"open('/proc/' + p + '/cmdline', 'rb').read()]\n"
            f"print(files, os.listdir('.'), hasattr(builtins, 'LEFT'), 'LEFT' in os.environ, sys.getrecursionlimit() == 123, "
            f"sys.modules.get('json', 0) is None, daemons)\n")
    try:
        assert box.run(leave).status is Status.PASSED
        result = box.run(look)
        assert result.stdout.strip() == "[] [] False False False False []", result.stderr
    finally:
        box.close()


def test_soak_benchmark_reports_no_growth(tmp_path: Path) -> None:
    doc = main(["--runs", "20", "--every", "10", "--out", str(tmp_path / "soak.json")])
    assert json.loads((tmp_path / "soak.json").read_text())["rows"] == doc["rows"]
    for row in doc["rows"]:
        assert row["runs"] == 20 and row["unexpected_status"] == 0
        assert row["zombies_max_growth"] == 0 and row["run_dirs_max_growth"] == 0 and row["cgroups_max_growth"] == 0


def test_stale_empty_run_cgroups_of_a_killed_framework_are_swept() -> None:
    from mcts_agent.envs.code import cgroup

    memory, why = cgroup.find("memory")
    if memory is None:
        pytest.skip(f"no memory cgroup here: {why}")
    stale, fresh = (os.path.join(memory.parent, f"mcts-sandbox-test{secrets.token_hex(4)}") for _ in range(2))
    os.mkdir(stale)
    os.mkdir(fresh)
    old = time.time() - 2 * cgroup.STALE_AFTER_S
    os.utime(stale, (old, old))
    try:
        assert cgroup.sweep_stale(memory) >= 1
        assert not os.path.exists(stale) and os.path.exists(fresh)  # a just-made cgroup may be about to be joined
    finally:
        for d in (stale, fresh):
            if os.path.exists(d):
                os.rmdir(d)

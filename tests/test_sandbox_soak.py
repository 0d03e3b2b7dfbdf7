"""Soak: 100 runs of every kind leave nothing behind (processes, zombies, fds, temp dirs, cgroups)."""

from __future__ import annotations

import glob
import os
import secrets
import tempfile
import shutil
from pathlib import Path

import pytest

from mcts_agent.envs.code.pool import SandboxPool
from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError, Status

PROGRAMS = [  # (program, tests, expected status)
    ("def f(x):\n    return x + 1\n", "assert f(1) == 2\nassert f(2) == 3\n", Status.PASSED),
    ("def f(x):\n    return 0\n", "assert f(1) == 2\n", Status.FAILED),
    ("def f(x):\n    return x + 1\n", "for x in (1, 2):\n    assert f(x) == x + 1\n", Status.PASSED),
    ("import os, sys\nif os.fork() == 0:\n    os.setsid()\n    import time\n    time.sleep(60)\n", None,
     Status.PASSED),
    ("import time\ntime.sleep(60)\n", None, Status.TIMEOUT),
    ("raise ValueError('no')\n", None, Status.FAILED),
    ("import os\nos._exit(0)\n", None, Status.FAILED),
    ("x = [0] * (1 << 40)\n", None, Status.FAILED),
    ("import os\nfor i in range(8):\n    os.pipe()\nprint('x' * 100000)\n", None, Status.PASSED),
    ("def f():\n    while True:\n        pass\n", "assert f() == 1\n", Status.TIMEOUT),
]


def zombies_under(parents: set[int]) -> list[int]:
    out = []
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat_path, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        ours = b"(bwrap)" in stat or os.stat(stat_path).st_uid == 65534  # bwrap, or the sandbox user
        if fields[0] == b"Z" and int(fields[1]) in parents and ours:
            out.append(int(stat_path.split("/")[2]))
    return out


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


def cgroup_dirs() -> list[str]:
    return glob.glob("/sys/fs/cgroup/*/**/mcts-sandbox-soak*", recursive=True)


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
        assert cgroup_dirs() == []
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

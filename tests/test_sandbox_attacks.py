"""Hostile programs: each attempt is contained, the host is untouched, nothing PASSes wrongly.

Limits are small (2 s wall, 256 MiB address space, 16 processes, 4 MiB tmpfs) so every
attack ends quickly and cannot hurt a shared machine: RLIMIT_NPROC and RLIMIT_AS are set
by the in-sandbox driver before any attack code runs. Needs the full isolation
(bubblewrap: read-only host filesystem, no network, pid namespace); skipped without it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from mcts_agent.envs.code.sandbox import (Sandbox, SandboxConfig, SandboxResult, SandboxUnavailableError, Status,
                                          VerdictSource)

TIMEOUT_S = 2.0
SLACK_S = 3.0  # teardown and a loaded machine


@pytest.fixture(scope="module", params=["cold", "warm"])
def box(request: pytest.FixtureRequest) -> Sandbox:
    config = SandboxConfig(timeout_s=TIMEOUT_S, memory_mb=256, max_processes=16, max_file_mb=2, scratch_mb=4,
                           max_output_bytes=4096, warm=request.param == "warm")
    try:
        sandbox = Sandbox(config)
    except SandboxUnavailableError as e:
        pytest.skip(f"full sandbox isolation not available here: {e}")
    if request.param == "warm" and not sandbox.warm:
        pytest.skip("warm starts are not safe here (no bwrap --disable-userns or no seccomp filter)")
    sandbox.run("pass")  # the warm zygote exists from now on
    yield sandbox
    sandbox.close()


def run_processes(box: Sandbox, run_id: str) -> list[int]:
    """Host pids of the run's processes: by MCTS_SANDBOX_ID (cold), or (warm) the zygote's
    descendants that left its session (the child waiting for the next job has not)."""
    if not box.warm:
        return processes_with(run_id)
    found = []
    for zygote in box.zygote_pids():
        sid = os.getsid(zygote)
        todo = [zygote]
        while todo:
            pid = todo.pop()
            kids = []
            for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else ():
                try:
                    kids += [int(x) for x in open(f"/proc/{pid}/task/{task}/children").read().split()]
                except OSError:
                    pass
            for kid in kids:
                try:
                    if os.getsid(kid) != sid:
                        found.append(kid)
                except OSError:
                    continue
                todo.append(kid)
    return found


def processes_with(run_id: str) -> list[int]:
    """Host pids whose environment carries this run's MCTS_SANDBOX_ID."""
    needle = f"MCTS_SANDBOX_ID={run_id}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    if needle in f.read():
                        found.append(int(entry.name))
            except OSError:
                pass
    return found


def run_watched(box: Sandbox, program: str, **kw: object) -> tuple[SandboxResult, int]:
    """Run ``program`` while counting its processes on the host; (result, most seen at once)."""
    run_id = secrets.token_hex(16)
    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], len(run_processes(box, run_id)))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = box.run(program, run_id=run_id, **kw)  # type: ignore[arg-type]
    finally:
        done.set()
        watcher.join()
    assert run_processes(box, run_id) == [], "a sandboxed process outlived its run"
    return result, peak[0]


# ----- time -----------------------------------------------------------------------------
def test_infinite_loop_times_out(box: Sandbox) -> None:
    result, _ = run_watched(box, "while True:\n    pass\n")
    assert result.status is Status.TIMEOUT
    assert result.duration_s < TIMEOUT_S + SLACK_S


def test_long_sleep_times_out(box: Sandbox) -> None:
    result, _ = run_watched(box, "import time\ntime.sleep(3600)\n")
    assert result.status is Status.TIMEOUT
    assert TIMEOUT_S - 0.1 <= result.duration_s < TIMEOUT_S + SLACK_S


# ----- processes and memory -------------------------------------------------------------
def test_fork_bomb_is_capped_by_rlimit_nproc(box: Sandbox) -> None:
    bomb = ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    result, peak = run_watched(box, bomb)
    assert result.status is Status.TIMEOUT, result
    assert peak <= box.config.max_processes + 4, peak  # + bwrap's monitor, which runs outside the limit


def test_memory_bomb_hits_the_address_space_limit(box: Sandbox) -> None:
    # a generous wall limit: touching 256 MiB of pages can be slow on a loaded machine
    result, _ = run_watched(box, "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 2**20))\n",
                            timeout_s=20.0)
    assert result.status is Status.FAILED, result
    assert "MemoryError" in result.stderr
    result, _ = run_watched(box, "x = bytearray(2**40)\n")  # one huge allocation fails at once
    assert result.status is Status.FAILED and "MemoryError" in result.stderr, result


def test_daemonized_child_is_killed_after_the_run(box: Sandbox) -> None:
    marker = f"mcts-daemon-{secrets.token_hex(8)}"
    daemon = (f"import os, sys\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
              f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(600)', {marker!r}])\n"
              f"    os._exit(0)\nos.wait()\n")
    seen: list[int] = []
    for tail in ("", "import time\ntime.sleep(3600)\n"):  # the program exits at once, or times out
        result, peak = run_watched(box, daemon + tail)
        seen.append(peak)
        assert result.status is (Status.PASSED if not tail else Status.TIMEOUT)
        assert not _cmdline_has(marker), "the detached child survived the run"
    assert max(seen) >= 2  # the daemon really ran beside the program


def _cmdline_has(marker: str) -> bool:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        return True
            except OSError:
                pass
    return False


# ----- output ---------------------------------------------------------------------------
def test_huge_stdout_is_truncated(box: Sandbox) -> None:
    result, _ = run_watched(box, "import sys\nfor _ in range(2000):\n    sys.stdout.write('x' * 10000)\n")
    assert result.status is Status.PASSED
    assert result.stdout_truncated and len(result.stdout.encode()) <= box.config.max_output_bytes


def test_binary_stdout_is_decoded_safely(box: Sandbox) -> None:
    result, _ = run_watched(box, "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 4)\n"
                                 "sys.stderr.buffer.write(b'\\xff\\xfe\\x00bad')\n")
    assert result.status is Status.PASSED
    assert "\ufffd" in result.stdout and "\ufffd" in result.stderr


# ----- disk -----------------------------------------------------------------------------
def test_one_big_file_is_stopped(box: Sandbox) -> None:
    prog = ("import errno\ntry:\n    with open('big', 'wb') as f:\n        while True:\n"
            "            f.write(b'x' * 2**20)\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n")
    result, _ = run_watched(box, prog)
    assert result.status is Status.PASSED
    assert result.stdout.strip() in ("EFBIG", "ENOSPC")


def test_many_small_files_stay_in_the_capped_scratch(box: Sandbox) -> None:
    prog = ("import errno, os\nn = 0\ntry:\n    while n < 100000:\n        with open(f'f{n}', 'w') as f:\n"
            "            f.write('x')\n        n += 1\nexcept OSError as e:\n    print(errno.errorcode[e.errno], n)\n")
    result, _ = run_watched(box, prog)
    code, count = result.stdout.split()
    assert code == "ENOSPC" and int(count) <= box.config.scratch_mb * 256  # one 4 KiB page per file


def test_canary_outside_scratch_survives(box: Sandbox, tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("alive")
    attack = (f"import os, shutil\npath = {str(canary)!r}\n"
              "for act in (lambda: os.remove(path), lambda: open(path, 'w').write('pwned'),\n"
              "            lambda: shutil.rmtree(os.path.dirname(path)), lambda: os.chmod(path, 0),\n"
              "            lambda: open(path + '.new', 'w').write('x')):\n"
              "    try:\n        act()\n        print('DID IT')\n"
              "    except OSError as e:\n        print(type(e).__name__)\n")
    for extra in ((), (str(tmp_path),)):  # the canary invisible, then visible read-only
        sandbox = Sandbox(box.config.replace(extra_ro_paths=extra))
        result, _ = run_watched(sandbox, attack)
        assert "DID IT" not in result.stdout, result.stdout
        assert canary.read_text() == "alive" and sorted(p.name for p in tmp_path.iterdir()) == ["canary.txt"]


def test_real_home_directory_is_not_writable(box: Sandbox) -> None:
    home = Path.home()
    name = f"mcts-sandbox-pwned-{secrets.token_hex(6)}"
    prog = (f"import os\nfor d in ({str(home)!r}, os.path.expanduser('~'), '/tmp', '/'):\n"
            f"    try:\n        open(os.path.join(d, {name!r}), 'w').write('x')\n        print('wrote', d)\n"
            f"    except OSError as e:\n        print('refused', d, type(e).__name__)\n")
    result, _ = run_watched(box, prog)
    assert not (home / name).exists() and not (Path("/tmp") / name).exists() and not (Path("/") / name).exists()
    assert f"refused {home} " in result.stdout and "refused / " in result.stdout
    assert "wrote /scratch" in result.stdout  # its own HOME is the scratch directory


# ----- secrets and network --------------------------------------------------------------
def test_parent_environment_secrets_are_not_visible(box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"s3cr3t-{secrets.token_hex(12)}"
    monkeypatch.setenv("MCTS_TEST_SECRET", secret)
    prog = (f"import os\nprint(dict(os.environ))\nfor p in ('/proc/self/environ', '/proc/1/environ', "
            f"'/proc/{os.getpid()}/environ', '/proc/{os.getppid()}/environ'):\n"
            "    try:\n        print(open(p, 'rb').read())\n    except OSError as e:\n        print(p, e)\n")
    result, _ = run_watched(box, prog)
    assert result.status is Status.PASSED
    assert secret not in result.stdout + result.stderr
    assert "MCTS_TEST_SECRET" not in result.stdout


def test_network_is_unreachable(box: Sandbox) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    prog = (f"import socket\nfor host in ('localhost', '127.0.0.1'):\n    try:\n"
            f"        socket.create_connection((host, {port}), timeout=1).close()\n        print('CONNECTED', host)\n"
            f"    except OSError as e:\n        print('failed', host, type(e).__name__)\n")
    try:
        result, _ = run_watched(box, prog)
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    assert "CONNECTED" not in result.stdout
    assert result.stdout.count("failed") == 2


# ----- faking a PASS --------------------------------------------------------------------
TESTS = "assert add(2, 2) == 4\nassert add(1, 2) == 3\n"  # the trusted shape: judged outside the sandbox
IN_PROCESS_TESTS = "for a, b, c in [(2, 2, 4), (1, 2, 3)]:\n    assert add(a, b) == c\n"  # run inside it
WRONG = "def add(a, b):\n    return 0\n"


@pytest.mark.parametrize("attack", [
    "import sys\nsys.exit(0)\n",
    "import os\nos._exit(0)\n",
    "raise SystemExit(0)\n",
    "import builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})\n",
    "import builtins\n_real = builtins.exec\nbuiltins.exec = lambda *a, **k: None\n",
    "import builtins\nbuiltins.add = lambda a, b: a + b\ndef check(*a):\n    pass\n",
    "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'P' + os.urandom(16).hex().encode())\n"
    "    except OSError:\n        pass\nos._exit(0)\n",
    "import sys\nprint('PASSED')\nprint(sys.stdin.read())\nsys.stdout.flush()\nimport os\nos._exit(0)\n",
    "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "import sys\nsys.excepthook = lambda *a: None\n",
])
@pytest.mark.parametrize("tests", [TESTS, IN_PROCESS_TESTS], ids=["trusted", "in-process"])
def test_harness_cannot_be_fooled(box: Sandbox, attack: str, tests: str) -> None:
    result, _ = run_watched(box, WRONG + attack, tests=tests, as_main=False)
    assert result.status is not Status.PASSED, (result.stdout, result.stderr)
    assert result.verdict_source is (VerdictSource.TRUSTED if tests is TESTS else VerdictSource.IN_PROCESS)
    if result.verdict_source is VerdictSource.IN_PROCESS:
        assert not result.sentinel_seen
    else:
        assert result.tests_passed == 0 and result.tests_total == 2


def test_patched_builtins_do_not_reach_the_tests(box: Sandbox) -> None:
    attack = ("import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.len = lambda x: 3\n"
              "def add(a, b):\n    builtins.sorted = lambda x: [1, 2, 3]\n    return 0\n")
    tests = "assert abs(add(1, 1) - 2) < 1e-9\nassert len('ab') == 2\nassert sorted([3, 1]) == [1, 3]\n"
    result, _ = run_watched(box, attack, tests=tests, as_main=False)
    assert result.status is Status.FAILED


@pytest.mark.parametrize("tests", [TESTS, IN_PROCESS_TESTS], ids=["trusted", "in-process"])
def test_honest_program_with_tests_passes(box: Sandbox, tests: str) -> None:
    result, _ = run_watched(box, "def add(a, b):\n    return a + b\n", tests=tests, as_main=False)
    assert result.status is Status.PASSED and result.sentinel_seen and result.returncode == 0


# ----- the framework itself dies --------------------------------------------------------
def test_killing_the_framework_kills_its_sandboxes(box: Sandbox) -> None:
    if box.warm:
        pytest.skip("runs its own cold sandbox in a child framework; once is enough")
    import signal
    import subprocess
    import sys

    run_id = secrets.token_hex(16)
    work = tempfile.mkdtemp(prefix="mcts-sandbox-test-")  # a killed framework leaves its run dir behind
    os.chmod(work, 0o755)
    parent = subprocess.Popen([sys.executable, "-c", (
        "from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig\n"
        f"Sandbox(SandboxConfig(timeout_s=60, work_dir={work!r})).run('import time\\ntime.sleep(60)', "
        f"run_id={run_id!r})\n")], cwd=str(Path(__file__).resolve().parents[1]))
    try:
        deadline = time.monotonic() + 30
        while len(processes_with(run_id)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with(run_id), "the sandbox never started"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while processes_with(run_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with(run_id) == []
    finally:
        parent.kill()
        parent.wait()
        shutil.rmtree(work, ignore_errors=True)

"""The five ways through the bubblewrap sandbox that a probe found (issue 17), written as a
hostile model would write them; each must now be stopped.

Config as in the probe: 2 s wall, 256 MiB, 16 processes, 2 MiB files, 4 MiB tmpfs. The
attack programs are module constants so ``benchmarks``-style scripts can replay them on
older code. Needs bubblewrap; the memory-cgroup tests also need a cgroup we may create.
"""

from __future__ import annotations

import os
import time

import pytest

from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError, Status, VerdictSource

CONFIG = SandboxConfig(timeout_s=2.0, memory_mb=256, max_processes=16, max_file_mb=2, scratch_mb=4,
                       max_output_bytes=8192)

# 1. Forged PASS: walk the frames back to the driver and write its sentinel.
FORGE_FROM_MODULE = """
import os, sys
f = sys._getframe(0)
while f is not None and 'nonce' not in f.f_locals:
    f = f.f_back
os.write(f.f_locals['status_fd'], b'P' + f.f_locals['nonce'])
os._exit(0)
"""
FORGE_FROM_CALL = """
import os
def add(a, b):
    try:
        raise RuntimeError
    except RuntimeError as e:
        f = e.__traceback__.tb_frame
    while f is not None and 'nonce' not in f.f_locals:
        f = f.f_back
    os.write(f.f_locals['status_fd'], b'P' + f.f_locals['nonce'])
    os._exit(0)
"""
IMPOSSIBLE = "assert add(4, 5) == 9182736455\nassert add(1, 1) == 7263544509\n"  # no honest add passes

# 2. Hidden tests read: look for the expected values anywhere the program can reach.
READ_HIDDEN = r"""
import os, re
PATTERN = re.compile(rb'add\((\d+), (\d+)\) == (\d+)')
table, seen = {}, []
def harvest(data, where):
    for a, b, want in PATTERN.findall(data):
        table[(int(a), int(b))] = int(want)
        seen.append(where)
for root, _, names in os.walk('/sandbox'):
    for name in names:
        harvest(open(os.path.join(root, name), 'rb').read(), name)
for p in ('/proc/self/cmdline', '/proc/self/environ'):
    harvest(open(p, 'rb').read(), p)
with open('/proc/self/maps') as maps, open('/proc/self/mem', 'rb', 0) as mem:
    for line in maps:
        span, perms = line.split()[:2]
        if 'r' not in perms or '[vsyscall]' in line:
            continue
        lo, hi = (int(x, 16) for x in span.split('-'))
        try:
            mem.seek(lo)
            harvest(mem.read(hi - lo), 'memory')
        except (OSError, ValueError, OverflowError):
            pass
print('FOUND', sorted(set(seen)), table)
def add(a, b):
    return table.get((a, b), a + b)
"""

# 3. SysV shared memory outside RLIMIT_AS: 5 x 128 MiB segments, touched then detached.
SYSV_SHM = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
held = 0
for _ in range(5):
    sid = libc.shmget(0, 128 << 20, 0o1000 | 0o600)
    if sid < 0:
        print('shmget refused:', os.strerror(ctypes.get_errno()))
        break
    addr = libc.shmat(sid, None, 0)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        print('shmat refused:', os.strerror(ctypes.get_errno()))
        break
    ctypes.memset(addr, 1, 128 << 20)
    libc.shmdt(addr)
    held += 128
print('HELD', held, flush=True)
"""
POSIX_SHM = """
import errno
written = 0
try:
    with open('/dev/shm/big', 'wb') as f:
        for _ in range(64):
            f.write(b'x' * (1 << 20)); f.flush(); written += 1
except OSError as e:
    print(errno.errorcode[e.errno])
print('WROTE', written)
"""

# 4. A nested user namespace, to mount a tmpfs of our own past the scratch and memory limits.
NESTED_USERNS = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
print('unshare binary exit', os.system('unshare -Urm true 2>/dev/null') >> 8)
if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
    print('unshare refused:', os.strerror(ctypes.get_errno()))
else:
    os.makedirs('/scratch/big', exist_ok=True)
    libc.mount(b'none', b'/scratch/big', b'tmpfs', 0, b'size=12g')
    st = os.statvfs('/scratch/big')
    print('MOUNTED MiB', st.f_blocks * st.f_frsize >> 20)
    with open('/scratch/big/fill', 'wb') as f:
        for _ in range(32):
            f.write(b'x' * (1 << 20))
    print('WROTE 32 MiB')
"""

# Memory the cgroup must see although RLIMIT_AS does not: memfd files and empty files (inodes).
MEMFD_BOMB = """
import os
fds = []
for i in range(60):
    fd = os.memfd_create('x')
    os.write(fd, b'x' * (2 << 20))
    fds.append(fd)
    print('HELD', 2 * len(fds), flush=True)
"""
INODE_BOMB = """
import os
n = 0
while n < 2_000_000:
    os.close(os.open(f'/tmp/f{n}', os.O_CREAT | os.O_WRONLY, 0o600))
    n += 1
"""


def make(config: SandboxConfig, mode: str) -> Sandbox:
    try:
        sandbox = Sandbox(config.replace(warm=mode == "warm"))
    except SandboxUnavailableError as e:
        pytest.skip(f"sandbox not available here: {e}")
    if mode == "warm" and not sandbox.warm:
        pytest.skip("warm starts are not safe here (no bwrap --disable-userns or no seccomp filter)")
    return sandbox


@pytest.fixture(scope="module", params=["cold", "warm"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def box(mode: str) -> Sandbox:
    sandbox = make(CONFIG, mode)
    yield sandbox
    sandbox.close()


def last_int(text: str, word: str) -> int:
    values = [int(line.split()[-1]) for line in text.splitlines() if line.startswith(word + " ")]
    return values[-1] if values else 0


# ----- 1. forged PASS -------------------------------------------------------------------------
def test_frame_walking_cannot_forge_a_pass(box: Sandbox) -> None:
    result = box.run(FORGE_FROM_MODULE, tests="assert False", as_main=False)
    assert result.status is Status.FAILED and result.verdict_source is VerdictSource.TRUSTED
    assert (result.tests_total, result.tests_passed) == (1, 0)


def test_traceback_walking_from_the_tested_function_cannot_forge_a_pass(box: Sandbox) -> None:
    result = box.run(FORGE_FROM_CALL, tests=IMPOSSIBLE, as_main=False)
    assert result.status is Status.FAILED and result.verdict_source is VerdictSource.TRUSTED
    assert result.tests_passed == 0 and "no result" in result.test_failures[0]


def test_in_process_verdicts_say_they_are_forgeable(box: Sandbox) -> None:
    """Tests outside the trusted shape still run in the sandbox, and the result says so."""
    loop_tests = "for a, b in [(4, 5)]:\n    assert add(a, b) == 9182736455\n"
    result = box.run(FORGE_FROM_CALL, tests=loop_tests, as_main=False)
    assert result.verdict_source is VerdictSource.IN_PROCESS and result.tests_total is None


# ----- 2. hidden tests read -------------------------------------------------------------------
def test_hidden_expected_values_are_nowhere_in_the_sandbox(box: Sandbox) -> None:
    result = box.run(READ_HIDDEN, tests=IMPOSSIBLE, as_main=False)
    assert result.verdict_source is VerdictSource.TRUSTED
    assert "FOUND [] {}" in result.stdout, result.stdout[-500:]  # no file, argument, variable or memory page
    assert "9182736455" not in result.stdout and "7263544509" not in result.stdout
    assert result.status is Status.FAILED and result.tests_passed == 0


# ----- 3. memory outside RLIMIT_AS ------------------------------------------------------------
def test_sysv_shared_memory_is_denied(box: Sandbox) -> None:
    result = box.run(SYSV_SHM)
    assert "HELD" in result.stdout and last_int(result.stdout, "HELD") < box.config.memory_mb, result.stdout
    if "seccomp" in box.describe() and "denied" in box.describe():
        assert "shmget refused: Operation not permitted" in result.stdout


def test_posix_shared_memory_is_a_small_tmpfs(box: Sandbox) -> None:
    result = box.run(POSIX_SHM)
    assert result.stdout.split()[0] == "ENOSPC" and last_int(result.stdout, "WROTE") <= 1, result.stdout


# ----- 4. nested user namespaces --------------------------------------------------------------
def test_nested_user_namespaces_are_disabled(box: Sandbox) -> None:
    if "nested user namespaces disabled" not in box.describe():
        pytest.skip("this bwrap or kernel cannot disable nested user namespaces")
    result = box.run(NESTED_USERNS)
    assert "unshare refused" in result.stdout and "MOUNTED" not in result.stdout, result.stdout
    assert last_int(result.stdout, "unshare binary exit") != 0


# ----- the memory cgroup ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_box(mode: str) -> Sandbox:
    sandbox = make(CONFIG.replace(memory_mb=64, timeout_s=10.0, memory_cgroup="require"), mode)
    yield sandbox
    sandbox.close()


def test_memfd_pages_count_against_the_cgroup(small_box: Sandbox) -> None:
    limit_mb = small_box._cgroup_memory_mb()
    result = small_box.run(MEMFD_BOMB)
    assert result.status is Status.FAILED and last_int(result.stdout, "HELD") < limit_mb, result.stdout[-200:]
    assert result.memory_peak_bytes is not None and result.memory_peak_bytes <= limit_mb << 20


def test_empty_files_count_against_the_cgroup(small_box: Sandbox) -> None:
    """Inodes in a tmpfs cost no blocks (its size does not bound them); the cgroup does."""
    result = small_box.run(INODE_BOMB)
    assert result.status in (Status.FAILED, Status.TIMEOUT)
    assert result.memory_peak_bytes is not None and result.memory_peak_bytes <= small_box._cgroup_memory_mb() << 20


def test_describe_states_what_bounds_memory(box: Sandbox) -> None:
    text = box.describe()
    assert "cgroup" in text and ("per-run" in text or "rlimits only" in text)


# ----- 5. zombies -----------------------------------------------------------------------------
def host_zombies_of_the_sandbox_user() -> set[int]:
    """Zombies re-parented to pid 1 that ran as the sandbox user (or as bwrap)."""
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rindex(b")") + 2:].split()
            if fields[0] == b"Z" and int(fields[1]) == 1 and (b"(bwrap)" in stat or entry.stat().st_uid == 65534):
                found.add(int(entry.name))
        except (OSError, ValueError):
            pass
    return found


def test_no_run_leaves_a_zombie(box: Sandbox) -> None:
    before = host_zombies_of_the_sandbox_user()
    new: set[int] = set()
    for program in ("pass", "import time\ntime.sleep(5)", "raise SystemExit(3)"):
        box.run(program, timeout_s=0.5)
        new |= host_zombies_of_the_sandbox_user() - before  # checked at once: pid 1 may reap later
    time.sleep(0.05)
    assert new == set()

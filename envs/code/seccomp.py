"""A small seccomp filter for bubblewrap's ``--seccomp FD``: deny what can hold memory or state
outside the sandbox's limits and outlive a run.

Denied (``EPERM``): SysV IPC (shared memory, message queues, semaphores: their memory is not
in RLIMIT_AS) and POSIX message queues (both outlive the process in its IPC namespace, which
a warm sandbox keeps across runs), kernel keyrings (per user, so shared by every run as "nobody"), io_uring,
userfaultfd, bpf and perf events. Syscalls of any other ABI (x32, or 32-bit ``int 0x80``,
which has the ``ipc`` multiplexer) get ``ENOSYS``. Everything else is allowed.

Built as raw classic-BPF (``struct sock_filter`` = u16 code, u8 jt, u8 jf, u32 k); only
x86_64 and aarch64 are known, elsewhere ``program()`` returns None and the sandbox says so.
"""

from __future__ import annotations

import errno
import platform
import struct

_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_X32_BIT = 0x40000000

# (audit arch, denied syscall numbers by name)
_ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (0xC000003E, {
        "shmget": 29, "shmat": 30, "shmctl": 31, "semget": 64, "semop": 65, "semctl": 66, "shmdt": 67,
        "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "semtimedop": 220, "add_key": 248,
        "request_key": 249, "keyctl": 250, "perf_event_open": 298, "bpf": 321, "userfaultfd": 323,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "mq_open": 240,
        "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243, "mq_notify": 244, "mq_getsetattr": 245}),
    "aarch64": (0xC00000B7, {
        "msgget": 186, "msgctl": 187, "msgrcv": 188, "msgsnd": 189, "semget": 190, "semctl": 191,
        "semtimedop": 192, "semop": 193, "shmget": 194, "shmctl": 195, "shmat": 196, "shmdt": 197,
        "add_key": 217, "request_key": 218, "keyctl": 219, "perf_event_open": 241, "bpf": 280,
        "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "mq_open": 180, "mq_unlink": 181, "mq_timedsend": 182, "mq_timedreceive": 183, "mq_notify": 184,
        "mq_getsetattr": 185}),
}
DENIED = tuple(sorted(_ARCHES["x86_64"][1]))


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes | None:
    """The compiled filter for ``machine`` (default: this one), or None if it is not known."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        return None
    arch, table = _ARCHES[machine]
    numbers = sorted(set(table.values()))
    out = [_insn(_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
           _insn(_JEQ_K, 1, 0, arch),
           _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
           _insn(_LD_W_ABS, 0, 0, 0)]  # seccomp_data.nr
    if machine == "x86_64":
        out += [_insn(_JGE_K, 0, 1, _X32_BIT), _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    deny_at = len(numbers)  # instructions after each JEQ until the deny RET
    for i, nr in enumerate(numbers):
        out.append(_insn(_JEQ_K, deny_at - i, 0, nr))
    out += [_insn(_RET_K, 0, 0, _RET_ALLOW), _insn(_RET_K, 0, 0, _RET_ERRNO | errno.EPERM)]
    return b"".join(out)

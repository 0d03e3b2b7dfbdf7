"""Which kernel isolation the sandbox can use here, and the command line that applies it.

Three backends, best first:

- ``bwrap`` (bubblewrap): new user, pid, net, ipc, uts and mount namespaces; the sandbox
  sees a read-only minimal root (``/usr``, the interpreter's prefix, a few ``/etc``
  files) plus size-capped tmpfs mounts for its scratch directory, ``/tmp`` and a 1 MiB
  ``/dev/shm``; no capabilities; no nested user namespaces (``--disable-userns``: no
  private mounts past the limits); the command is the namespace's pid 1 (``--as-pid-1``:
  no second bwrap that would outlive the monitor as a zombie); a seccomp filter
  (``seccomp``) against SysV IPC and keyrings; killed with its parent. Everything the
  sandbox can write vanishes with it.
- ``unshare`` (util-linux): new user, pid and net namespaces only. No network and no
  escaped processes, but the host filesystem is as writable as for the calling user.
- ``none``: a process group with rlimits and a scrubbed environment, nothing more.

When the framework runs as root, every backend is started as uid 65534 ("nobody") on the
host: the kernel exempts uid 0 from RLIMIT_NPROC even inside a user namespace and lets it
open global sysctls for writing, and file permissions then protect the host as well.

Whether a backend works is found by running it once (kernels and containers differ in
what they allow); the answer is cached per process.
"""

from __future__ import annotations

import enum
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Sequence

# Read-only /etc files the sandbox may see (public, needed by libc or the time module).
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/hosts", "/etc/nsswitch.conf")
# Top-level directories that are symlinks into /usr on merged-usr systems.
TOP_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SANDBOX_UID = 65534  # "nobody" inside the user namespace
SHM_BYTES = 1 << 20  # /dev/shm (POSIX shared memory) is a 1 MiB tmpfs at most


class Backend(str, enum.Enum):
    """An isolation mechanism; see the module docstring."""

    BWRAP = "bwrap"
    UNSHARE = "unshare"
    NONE = "none"


@dataclass(frozen=True)
class Isolation:
    """What a sandbox run is protected by. ``detail`` says it in words."""

    backend: Backend
    no_network: bool
    readonly_host_fs: bool
    pid_namespace: bool
    detail: str


@dataclass(frozen=True)
class Layout:
    """Where the program and the scratch directory are, on the host and inside."""

    host_program_dir: str  # holds program.py; bound read-only inside under bwrap
    host_scratch: str | None  # None under bwrap (a tmpfs is used instead)
    program_path: str  # as the sandboxed process sees it
    scratch: str  # cwd, HOME and TMPDIR as the sandboxed process sees it


INSIDE_PROGRAM_DIR = "/sandbox"
INSIDE_SCRATCH = "/scratch"


def interpreter_candidates(python: str | None) -> list[str]:
    """Interpreters to try, best first: ``python`` if given, else this one, then the system's."""
    if python is not None:
        return [os.path.realpath(python)]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = [os.path.realpath(sys.executable)]
    for path in (f"/usr/bin/{version}", f"/usr/local/bin/{version}", shutil.which(version)):
        if path and os.access(path, os.X_OK) and os.path.realpath(path) not in found:
            found.append(os.path.realpath(path))
    return found


def python_dirs(exe: str) -> tuple[str, ...]:
    """Directories outside /usr the interpreter ``exe`` needs, to bind read-only."""
    if exe == os.path.realpath(sys.executable):
        prefixes = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    else:
        prefixes = {os.path.dirname(os.path.dirname(exe))}  # <prefix>/bin/python
    return tuple(sorted(p for p in prefixes if p not in ("/", "/usr") and not p.startswith("/usr/")))


def bwrap_prefix(bwrap: str, layout: Layout, *, python_dirs: Sequence[str], scratch_bytes: int,
                 allow_network: bool, extra_ro: Sequence[str] = (), seccomp_fd: int | None = None,
                 hardened: bool = True, ro_binds: Sequence[tuple[str, str]] = (),
                 rw_binds: Sequence[tuple[str, str]] = ()) -> list[str]:
    """The bubblewrap arguments that come before the sandboxed command.

    ``hardened`` adds ``--disable-userns`` (no nested user namespace, so no private mounts
    or tmpfs past the limits) and ``--as-pid-1`` (the command is the namespace's init: no
    second bwrap process that outlives the monitor as a zombie). ``seccomp_fd`` is a pipe
    holding ``seccomp.program()``. ``ro_binds`` / ``rw_binds`` are (host, inside) pairs for
    layers above this one (a repository's scratch copy, a virtualenv).
    """
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
           "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    if hardened:
        cmd += ["--disable-userns", "--as-pid-1"]
    if allow_network:
        cmd.append("--share-net")
    cmd += ["--ro-bind", "/usr", "/usr"]
    for top in TOP_DIRS:
        if os.path.islink(top):
            cmd += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            cmd += ["--ro-bind", top, top]
    for path in (*python_dirs, *extra_ro, *ETC_FILES):
        if os.path.exists(path):
            cmd += ["--ro-bind", path, path]
    size = str(scratch_bytes)
    cmd += ["--proc", "/proc", "--dev", "/dev",
            "--size", str(min(scratch_bytes, SHM_BYTES)), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
            "--size", size, "--tmpfs", "/tmp",
            "--size", size, "--tmpfs", layout.scratch,
            "--ro-bind", layout.host_program_dir, INSIDE_PROGRAM_DIR]
    for host, inside in ro_binds:
        cmd += ["--ro-bind", host, inside]
    for host, inside in rw_binds:
        cmd += ["--bind", host, inside]
    cmd += ["--remount-ro", "/", "--chdir", layout.scratch]
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    return cmd


def unshare_prefix(unshare: str, *, allow_network: bool) -> list[str]:
    """util-linux unshare. ``sh`` stays pid 1 of the new pid namespace because the kernel
    shields a namespace's init from its own RLIMIT_CPU signals; the program runs below it."""
    cmd = [unshare, "--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--mount-proc"]
    if not allow_network:
        cmd.append("--net")
    return cmd + ["/bin/sh", "-c", '"$@"; exit $?', "sh"]


def describe(backend: Backend, allow_network: bool, hardened: bool = True) -> Isolation:
    net = not allow_network and backend is not Backend.NONE
    if backend is Backend.BWRAP:
        text = ("bubblewrap: user+pid+mount+ipc+uts namespaces"
                + ("" if allow_network else " + empty network namespace")
                + "; read-only minimal root; size-capped tmpfs scratch, 1 MiB /dev/shm; no capabilities"
                + ("; nested user namespaces disabled; the program is pid 1 (no extra bwrap process)" if hardened
                   else "; NESTED USER NAMESPACES ALLOWED (this bwrap or kernel lacks --disable-userns)"))
        return Isolation(backend, net, True, True, text)
    if backend is Backend.UNSHARE:
        text = ("unshare: user+pid namespaces" + ("" if allow_network else " + empty network namespace")
                + "; the host filesystem is NOT read-only (writable wherever the calling user can write)")
        return Isolation(backend, net, False, True, text)
    return Isolation(backend, False, False, False,
                     "none: process group, rlimits and scrubbed environment only; network and the host "
                     "filesystem are reachable, and a child that detaches and clears its environment can escape")


def default_run_as(uid: int | None) -> int | None:
    """The uid to run sandboxes as: ``uid`` if given, else "nobody" when we are root, else ours.

    Root must not be the sandbox's user even inside a user namespace: the kernel exempts
    uid 0 from RLIMIT_NPROC and lets it open global sysctls under /proc/sys for writing.
    """
    if uid is not None:
        return uid
    return SANDBOX_UID if os.geteuid() == 0 else None


def reachable(path: str, uid: int) -> bool:
    """Whether user ``uid`` (group ``uid``) may traverse every directory down to ``path``."""
    current = os.path.realpath(path)
    while True:
        st = os.stat(current)
        if st.st_uid == uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == uid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
        if current == "/":
            return True
        current = os.path.dirname(current)


def popen_user(run_as: int | None) -> dict[str, object]:
    """Keyword arguments for ``subprocess.Popen`` that start the process as ``run_as``."""
    if run_as is None or run_as == os.geteuid():
        return {}
    return {"user": run_as, "group": run_as, "extra_groups": []}


_cache: dict[tuple, str | None] = {}
_lock = threading.Lock()


def probe(backend: Backend, *, tool: str | None, python: str, run_as: int | None,
          allow_network: bool, hardened: bool = True, seccomp: bytes | None = None) -> str | None:
    """None if ``backend`` runs ``python`` as ``run_as`` on this machine, else why not (cached)."""
    key = (backend, tool, python, run_as, allow_network, hardened, seccomp)
    with _lock:
        if key not in _cache:
            _cache[key] = _probe_uncached(backend, tool, python, run_as, allow_network, hardened, seccomp)
        return _cache[key]


def _probe_uncached(backend: Backend, tool: str | None, python: str, run_as: int | None,
                    allow_network: bool, hardened: bool, seccomp: bytes | None) -> str | None:
    run = [python, "-I", "-S", "-c", "pass"]
    if backend is Backend.NONE:
        return _try(run, run_as)
    if tool is None:
        return f"the {backend.value!r} executable was not found on PATH"
    if backend is Backend.UNSHARE:
        return _try(unshare_prefix(tool, allow_network=allow_network) + run, run_as)
    import tempfile
    with tempfile.TemporaryDirectory(prefix="mcts-probe-") as tmp:
        os.chmod(tmp, 0o755)
        layout = Layout(tmp, None, INSIDE_PROGRAM_DIR + "/program.py", INSIDE_SCRATCH)
        fd = seccomp_pipe(seccomp) if seccomp is not None else None
        try:
            cmd = bwrap_prefix(tool, layout, python_dirs=python_dirs(python), scratch_bytes=1 << 20,
                               allow_network=allow_network, hardened=hardened, seccomp_fd=fd)
            return _try(cmd + run, run_as, () if fd is None else (fd,))
        finally:
            if fd is not None:
                os.close(fd)


def seccomp_pipe(program: bytes) -> int:
    """A pipe's read end that holds ``program`` (bwrap reads it to the end)."""
    r, w = os.pipe()
    try:
        os.write(w, program)  # a few hundred bytes: far below the pipe's capacity
    finally:
        os.close(w)
    return r


def _try(cmd: list[str], run_as: int | None, pass_fds: Sequence[int] = ()) -> str | None:
    who = "" if run_as is None else f" as uid {run_as}"
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
                             cwd="/", pass_fds=tuple(pass_fds), **popen_user(run_as))  # type: ignore[arg-type]
    except (OSError, subprocess.SubprocessError) as e:
        return f"{os.path.basename(cmd[0])} could not run{who}: {e}"
    if out.returncode != 0:
        err = out.stderr.decode("utf-8", "replace").strip()[-300:]
        return f"{os.path.basename(cmd[0])} exited with {out.returncode}{who}: {err or '(no message)'}"
    return None


def find_tool(name: str, explicit: str | None) -> str | None:
    """``explicit`` if given (must be executable), else ``name`` looked up on PATH."""
    if explicit is not None:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which(name)

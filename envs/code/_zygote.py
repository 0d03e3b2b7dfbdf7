"""Warm zygote that runs INSIDE a long-lived sandbox as its pid 1:
``python -I -S -B -c <this source> CTL_FD JOB_FD <driver source>``.

Loop: fork a child from this pristine interpreter, say ``ready <pid>`` on the control socket,
and wait. The child (not this process) reads one job from the job socket: a Python literal
``{"argv", "sources", "env", "cwd"}`` plus the run's stdin, stdout, stderr and status pipes,
then runs ``_driver._main``. When it exits (or the framework says ``kill``), this process
kills everything else in the namespace (``kill(-1)`` from pid 1 spares only itself), reaps
it, says ``exit <wait status>``, empties /scratch, /tmp and /dev/shm, and forks again. So
nothing a run leaves (processes, files, changed modules) reaches the next one, and this
process never holds any run's data (the child receives it).

The children cannot signal this process (pid 1 ignores signals it has no handler for from
inside its namespace) nor read its memory (it is not dumpable), and they never hold the
control socket. Standard library only.
"""
import ctypes
import os
import select
import signal
import socket
import sys

WIPE = ("/scratch", "/tmp", "/dev/shm")


def main() -> None:
    ctl = socket.socket(fileno=int(sys.argv[1]))
    job_fd = int(sys.argv[2])
    driver = {"__name__": "mcts_driver"}
    exec(compile(sys.argv[3], "<driver>", "exec"), driver)
    _dumpable(0)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    while True:
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (wake_r, wake_w):
                os.close(fd)
            ctl.close()
            _child(driver, job_fd)
        ctl.send(b"ready %d" % pid)
        status = _wait(pid, ctl, wake_r)
        _kill_all()
        ctl.send(b"exit %d" % status)
        _wipe()


def _wait(pid: int, ctl: socket.socket, wake_r: int) -> int:
    """The child's wait status, once it exits (killing it on ``kill``); reaps orphans meanwhile."""
    while True:
        ready, _, _ = select.select([ctl, wake_r], [], [])
        if ctl in ready:
            msg = ctl.recv(64)
            if not msg:  # the framework is gone
                _kill_all()
                os._exit(0)
            if msg == b"kill":
                try:
                    os.kill(-1, signal.SIGKILL)  # reaped below, the child among them
                except ProcessLookupError:
                    pass
        if wake_r in ready:
            os.read(wake_r, 512)
        while True:
            try:
                done, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if done == 0:
                break
            if done == pid:
                return status


def _kill_all() -> None:
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _wipe() -> None:
    for top in WIPE:
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            _remove(entry.path)


def _remove(path: str) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)  # a run may have made it unreadable
            for entry in os.scandir(path):
                _remove(entry.path)
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass


def _dumpable(flag: int) -> None:
    ctypes.CDLL(None).prctl(4, flag, 0, 0, 0)  # PR_SET_DUMPABLE


def _child(driver: dict, job_fd: int) -> None:
    try:
        job = socket.socket(fileno=job_fd)
        msg, fds, _, _ = socket.recv_fds(job, 1 << 20, 4)
        job.close()
        if len(fds) != 4:
            os._exit(70)
        for target, fd in zip((0, 1, 2, 3), fds):
            os.dup2(fd, target)
        os.closerange(4, 65536)
        spec = eval(msg.decode("utf-8"), {"__builtins__": {}})  # written by the framework
        os.setsid()
        os.environ.clear()
        os.environ.update(spec["env"])
        os.chdir(spec["cwd"])
        _dumpable(1)  # its own /proc/self stays usable; its memory is this fresh copy only
        sys.argv = ["-c"]
    except BaseException:  # noqa: BLE001 - a broken job is the framework's error, reported by exit code
        os._exit(70)
    driver["_main"](spec["argv"], spec["sources"])
    os._exit(1)


main()

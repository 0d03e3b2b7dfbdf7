"""Trusted driver that runs INSIDE the sandbox: ``python -I -S -c <this source> ARGS``.

ARGS: program path, status fd, the rlimits ``cpu,as,nproc,fsize,nofile`` (-1 = keep), the
module ``__name__`` to run under (``__main__`` runs a main block), and a tests path or "-".
The parent writes a random nonce to stdin. The driver (1) sets the rlimits, (2) reads the
nonce and replaces stdin by /dev/null, (3) writes ``S`` to the status fd, (4) executes the
program as a module, then the tests (if any) in a namespace of their own that holds the
program's names and a copy of the builtins taken before the program ran (so patching
``builtins`` cannot fool them), and (5) only if everything ran to its end without raising
or exiting, writes ``P<nonce>`` to the status fd and leaves with ``os._exit(0)``. The nonce
is in no file, argument or environment variable the program could read, so an early exit,
a fake printed sentinel or a patched assert cannot produce a PASS.

This file uses nothing beyond the standard library and must stay self-contained.
"""
import builtins
import os
import resource
import sys


def _main() -> None:
    write, exit_ = os.write, os._exit  # bound now, before the program can patch ``os``
    program, status_fd = sys.argv[1], int(sys.argv[2])
    cpu, as_, nproc, fsize, nofile = (int(x) for x in sys.argv[3].split(","))
    module_name, tests = sys.argv[4], sys.argv[5]
    pristine = dict(builtins.__dict__)
    for res, val in ((resource.RLIMIT_AS, as_), (resource.RLIMIT_NPROC, nproc),
                     (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_NOFILE, nofile),
                     (resource.RLIMIT_CORE, 0)):
        if val >= 0:
            resource.setrlimit(res, (val, val))
    if cpu >= 0:  # SIGXCPU at the soft limit, SIGKILL one second later
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    nonce = os.read(0, 256).strip()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    write(status_fd, b"S")
    run = exec  # bound now: the program may patch builtins.exec to skip the tests
    namespace = {"__name__": module_name, "__file__": program, "__builtins__": builtins}
    try:
        program_code = _compiled(program)  # both compiled before any of the program runs
        test_code = _compiled(tests) if tests != "-" else None
        run(program_code, namespace)
        if test_code is not None:
            run(test_code, {**namespace, "__file__": tests, "__builtins__": pristine})
    except SystemExit:
        raise  # the program chose to stop: its exit status stands and no sentinel is written
    except BaseException:  # noqa: BLE001 - any failure of the program is reported, not raised
        import traceback  # only now: it costs several ms of start-up on every run

        traceback.print_exc()
        _flush()
        exit_(1)
    _flush()
    write(status_fd, b"P" + nonce)
    exit_(0)  # skip atexit hooks and non-daemon threads the program may have left behind


def _compiled(path: str):  # noqa: ANN202 - a code object
    with open(path, "rb") as f:
        return compile(f.read(), path, "exec")


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - the program may have closed or replaced the stream
            pass


_main()

"""Driver that runs INSIDE the sandbox: ``python -I -S -c <this source> ARGS``. It is not trusted:
the program runs in this same interpreter and can read or change anything here.

ARGS: program path, status fd, the rlimits ``cpu,as,nproc,fsize,nofile`` (-1 = keep), the
module ``__name__`` to run under (``__main__`` runs a main block), and the mode: ``-`` (the
program alone), ``tests:PATH`` (run a tests file after the program, in-process) or
``exec`` (then the command to run under the limits, given as the remaining ARGS) or
``calls:PATH`` (a Python literal ``{"calls": [...], "imports": [...], "candidate": name}``
whose call expressions are evaluated after the program; each value is written back as one
status record, and the framework, which alone holds the expected values, judges them).

Status stream: ``S`` once the limits are set, then (calls mode) one line per call,
``R<i> <tagged JSON>`` / ``E<i> <exception type>`` / ``U<i> <type that is not plain data>``,
then ``P<nonce>`` if everything ran to its end. The nonce (read from stdin) only tells an
early exit from a finished run; it proves nothing against a program that reads this
process's memory, which is why in-process verdicts are the weaker kind.

This file uses nothing beyond the standard library and must stay self-contained.
"""
import builtins
import os
import resource
import sys


def _main(argv: list, sources: dict | None = None) -> None:
    """Run one program; ``argv`` is ARGS above. ``sources`` maps paths to their text (the warm
    zygote passes files in memory: ``_zygote``); otherwise they are read from disk."""
    write, exit_ = os.write, os._exit  # bound now, before the program can patch ``os``
    program, status_fd = argv[0], int(argv[1])
    cpu, as_, nproc, fsize, nofile = (int(x) for x in argv[2].split(","))
    module_name, mode = argv[3], argv[4]
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
    if mode == "exec":  # a command, not Python: it runs under the limits, without the status pipe
        os.close(status_fd)
        try:
            os.execv(argv[5], argv[5:])
        except OSError as e:
            write(2, b"cannot run %s: %s\n" % (argv[5].encode(), e.strerror.encode()))
            exit_(127)
    run = exec  # bound now: the program may patch builtins.exec to skip the tests
    namespace = {"__name__": module_name, "__file__": program, "__builtins__": builtins}
    kind, _, path = mode.partition(":")
    try:
        program_code = _compiled(program, sources)  # all compiled before any of the program runs
        test_code = _compiled(path, sources) if kind == "tests" else None
        spec = _spec(path, sources) if kind == "calls" else None
        run(program_code, namespace)
        if test_code is not None:
            run(test_code, {**namespace, "__file__": path, "__builtins__": pristine})
    except SystemExit:
        raise  # the program chose to stop: its exit status stands and no sentinel is written
    except BaseException:  # noqa: BLE001 - any failure of the program is reported, not raised
        _report_exception()
        exit_(1)
    if spec is not None:
        _evaluate_calls(spec, namespace, pristine, write, status_fd)
    _flush()
    write(status_fd, b"P" + nonce)
    exit_(0)  # skip atexit hooks and non-daemon threads the program may have left behind


def _spec(path: str, sources: dict | None) -> dict:
    text = sources[path] if sources is not None else _read(path).decode("utf-8")
    spec = eval(text, {"__builtins__": {}})  # written by the framework; read before the program runs
    spec["codes"] = [compile(src, f"<test call {i}>", "eval") for i, src in enumerate(spec["calls"])]
    return spec


def _evaluate_calls(spec: dict, namespace: dict, pristine: dict, write, status_fd: int) -> None:  # noqa: ANN001
    scope = {**namespace, "__builtins__": pristine}
    for name in spec["imports"]:
        scope[name] = __import__(name)
    candidate = spec["candidate"]
    missing = candidate is not None and candidate not in namespace
    if candidate is not None and not missing:
        scope["candidate"] = namespace[candidate]
    for i, code in enumerate(spec["codes"]):
        if missing:
            record = b"E%d NameError" % i
        else:
            try:
                value = eval(code, scope)
            except BaseException as e:  # noqa: BLE001 - SystemExit too: that test fails, the rest still run
                record = b"E%d %s" % (i, type(e).__name__.encode("ascii", "replace"))
            else:
                try:
                    record = b"R%d %s" % (i, _encode(value, 0).encode("ascii"))
                except _Opaque as e:
                    record = b"U%d %s" % (i, str(e).encode("ascii", "replace"))
        _write_all(write, status_fd, record + b"\n")


class _Opaque(Exception):
    """A value that is not plain data (or nests too deeply)."""


def _encode(v, depth: int) -> str:  # noqa: ANN001, C901 - one branch per type
    """Tagged JSON of plain data (see ``trusted.decode``); subclasses are read through their base type."""
    if depth > 100:
        raise _Opaque("deeply nested value")
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, int):
        n = int.__int__(v)
        return str(n) if n.bit_length() < 10_000 else '["int", "%x"]' % n if n >= 0 else '["int", "-%x"]' % -n
    if isinstance(v, float):
        return _float(float.__float__(v))
    if isinstance(v, complex):
        return '["complex", %s, %s]' % (_float(v.real), _float(v.imag))
    if isinstance(v, str):
        return _string(str.__str__(v))
    if isinstance(v, (bytes, bytearray)):
        return '["bytes", "%s"]' % bytes(v).hex()
    for base, tag, items in ((list, "list", list.__iter__), (tuple, "tuple", tuple.__iter__),
                             (set, "set", set.__iter__), (frozenset, "frozenset", frozenset.__iter__)):
        if isinstance(v, base):
            return '["%s"%s]' % (tag, "".join(", " + _encode(x, depth + 1) for x in items(v)))
    if isinstance(v, dict):
        return '["dict"%s]' % "".join(", [%s, %s]" % (_encode(k, depth + 1), _encode(x, depth + 1))
                                      for k, x in dict.items(v))
    raise _Opaque(type(v).__name__)


def _float(x: float) -> str:
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "Infinity" if x > 0 else "-Infinity"
    return float.__repr__(x)


def _string(s: str) -> str:
    try:
        from _json import encode_basestring_ascii
    except ImportError:  # pragma: no cover - every CPython build has it
        return '"' + "".join(c if " " <= c < "\x7f" and c not in '"\\' else "\\u%04x" % ord(c)
                             if ord(c) < 0x10000 else "\\u%04x\\u%04x" % (0xD7C0 + (ord(c) >> 10),
                                                                        0xDC00 + (ord(c) & 0x3FF))
                             for c in s) + '"'
    return encode_basestring_ascii(s)


def _write_all(write, fd: int, data: bytes) -> None:  # noqa: ANN001
    view = memoryview(data)
    while view:
        try:
            view = view[write(fd, view):]
        except OSError:
            return  # the framework stopped listening (a cap or a timeout): nothing more to say


def _report_exception() -> None:
    import traceback  # only now: it costs several ms of start-up on every run

    traceback.print_exc()
    _flush()


def _compiled(path: str, sources: dict | None):  # noqa: ANN202 - a code object
    return compile(sources[path] if sources is not None else _read(path), path, "exec")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - the program may have closed or replaced the stream
            pass


if __name__ == "__main__":
    _main(sys.argv[1:])

"""Stopping what a process started outside itself (browsers, page servers, JVMs) on every way out.

A ``Registry`` holds one ``weakref.finalize`` per live resource, so each is stopped by its
owner's ``close()`` (call the finalizer), when the owner is collected, at interpreter exit
(``weakref.finalize`` runs at exit), and on SIGTERM/SIGHUP: the handler that
``install_signal_handlers`` sets stops every resource of every registry, then runs the
signal's previous handler (or its default action). Ctrl-C raises ``KeyboardInterrupt`` as
usual, and the unwinding code closes what it holds. SIGKILL runs none of this: resources
started in a process group of their own are swept by their modules (``browser.sweep_orphans``)
or end with their pipe (py4j's ``--die-on-broken-pipe``).
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import weakref
from typing import Any, Callable, Hashable

_REGISTRIES: "list[Registry]" = []
_HANDLED: set[int] = set()


class Registry:
    """The live resources of one kind that this process started and has not stopped."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._live: dict[Hashable, weakref.finalize] = {}
        self._lock = threading.RLock()  # re-entrant: a signal handler may close_all() inside track
        _REGISTRIES.append(self)

    def track(self, owner: object, stop: Callable[[], None], key: Hashable | None = None) -> weakref.finalize:
        """Call ``stop()`` once: when the returned finalizer is called, ``owner`` is collected, at
        exit or on SIGTERM/SIGHUP. ``key`` (default ``id(owner)``) names it in ``keys()``."""
        key = id(owner) if key is None else key

        def run() -> None:
            with self._lock:
                self._live.pop(key, None)
            stop()

        fin = weakref.finalize(owner, run)
        with self._lock:
            self._live[key] = fin
        install_signal_handlers()
        return fin

    def keys(self) -> list[Hashable]:
        """The keys of the resources still live."""
        with self._lock:
            return list(self._live)

    def close_all(self) -> None:
        """Stop every live resource of this registry."""
        with self._lock:
            finalizers = list(self._live.values())
        for f in finalizers:
            f()

    def __bool__(self) -> bool:
        return bool(self.keys())


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is neither a zombie nor dead."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def close_everything() -> None:
    """Stop every live resource of every registry."""
    for registry in list(_REGISTRIES):
        registry.close_all()


def install_signal_handlers() -> None:
    """On SIGTERM/SIGHUP: ``close_everything()``, then the signal's previous handler (or its default action).

    Only the main thread may set handlers: envs call this when built, resources when started there."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if sig in _HANDLED:
            continue
        previous = signal.getsignal(sig)
        if previous is signal.SIG_IGN:
            continue
        signal.signal(sig, functools.partial(_on_signal, previous))
        _HANDLED.add(sig)


def _on_signal(previous: Any, signum: int, frame: Any) -> None:
    close_everything()
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)

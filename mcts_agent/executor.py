"""Where a round's env steps run: one batched call, serially, on threads, on processes or on Ray actors.

The planner gathers every ``(state, action)`` of a round and hands them to an executor
in one ``map`` call, so slow steps (a test run, a page load) overlap instead of running
one after another. Each item may carry a deadline (its tree's time budget): an item not
started by then is skipped and comes back as ``SKIPPED``, so a time budget is honoured
inside a long round. Results come back in input order.

``ProcessExecutor`` pickles the env once into each worker; the function must be a
module-level callable ``fn(env, item)``. ``RayExecutor`` (``mcts_agent.ray_executor``, kind
``ray``) does the same on Ray actors, on one machine or a cluster; ``ray`` is imported only then.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import enum
import multiprocessing
import os
import time
from typing import Any, Callable, Sequence

from mcts_agent.errors import ConfigError


class _Skipped(enum.Enum):
    SKIPPED = "skipped"


SKIPPED = _Skipped.SKIPPED
"""The result of an item whose deadline passed before it started."""

EXECUTORS = ("serial", "thread", "process", "ray")


def _call(fn: Callable[[Any, Any], Any], env: Any, item: Any, deadline: float | None) -> Any:
    if deadline is not None and time.perf_counter() >= deadline:
        return SKIPPED
    return fn(env, item)


class Executor(abc.ABC):
    """Runs ``fn(env, item)`` for a batch of items; results in order."""

    workers: int = 1

    @abc.abstractmethod
    def map(self, fn: Callable[[Any, Any], Any], env: Any, items: Sequence[Any],
            deadlines: Sequence[float | None] | None = None) -> list[Any]:
        """``[fn(env, item) or SKIPPED for item in items]``; exceptions propagate."""

    def close(self) -> None:
        """Stop worker threads or processes (idempotent)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SerialExecutor(Executor):
    """Every step in the calling thread, one after another."""

    def map(self, fn, env, items, deadlines=None):  # type: ignore[no-untyped-def]
        deadlines = deadlines or [None] * len(items)
        return [_call(fn, env, item, d) for item, d in zip(items, deadlines)]


class _PoolExecutor(Executor):
    def __init__(self, workers: int) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"env executor workers must be an int >= 1, got {workers!r}")
        self.workers = workers
        self._pool: cf.Executor | None = None

    def _submit(self, env: Any, fn: Callable[..., Any], item: Any, deadline: float | None) -> cf.Future:
        raise NotImplementedError

    def map(self, fn, env, items, deadlines=None):  # type: ignore[no-untyped-def]
        deadlines = deadlines or [None] * len(items)
        if len(items) <= 1 and self.workers == 1:
            return [_call(fn, env, item, d) for item, d in zip(items, deadlines)]
        futures = [self._submit(env, fn, item, d) for item, d in zip(items, deadlines)]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class ThreadExecutor(_PoolExecutor):
    """Steps on a pool of threads (envs whose steps wait on I/O or subprocesses: sandboxes, browsers)."""

    def _submit(self, env, fn, item, deadline):  # type: ignore[no-untyped-def]
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="env-step")
        return self._pool.submit(_call, fn, env, item, deadline)


_WORKER_ENV: Any = None


def _init_worker(env: Any) -> None:
    global _WORKER_ENV
    _WORKER_ENV = env


def _call_in_worker(fn: Callable[[Any, Any], Any], item: Any, deadline: float | None) -> Any:
    return _call(fn, _WORKER_ENV, item, deadline)


class ProcessExecutor(_PoolExecutor):
    """Steps on worker processes, each holding its own copy of the env (CPU-bound pure-Python steps).

    The env is pickled once per worker; a different env object restarts the pool.
    """

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._env_id: int | None = None

    def _submit(self, env, fn, item, deadline):  # type: ignore[no-untyped-def]
        if self._pool is not None and self._env_id != id(env):
            self.close()
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                                initargs=(env,))
            self._env_id = id(env)
        return self._pool.submit(_call_in_worker, fn, item, deadline)


def make_executor(kind: str = "thread", workers: int = 1, **options: Any) -> Executor:
    """An executor by name: ``serial``, ``thread``, ``process`` or ``ray``, with ``workers`` workers.

    ``options`` go to ``RayExecutor`` (address, resources, retries); other kinds take none.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"env executor workers must be an int >= 1, got {workers!r}")
    if kind == "ray":
        from mcts_agent.ray_executor import RayExecutor

        return RayExecutor(workers, **options)
    if options:
        raise ConfigError(f"env executor {kind!r} takes no options, got {sorted(options)}; they apply to 'ray'")
    if kind == "serial" or (kind == "thread" and workers == 1):
        return SerialExecutor()
    if kind == "thread":
        return ThreadExecutor(workers)
    if kind == "process":
        return ProcessExecutor(workers)
    raise ConfigError(f"unknown env executor {kind!r}; expected one of {list(EXECUTORS)}")

"""Env steps on Ray actors: the ``ray`` executor, and connecting to a Ray cluster.

``RayExecutor`` keeps a pool of ``EnvWorker`` actors, each holding its own copy of the env
(put in the object store once per env object). A round's items are dispatched from this
process, one at a time per actor, so a deadline is checked when an item starts (as in the
local pools) and a slow step does not hold up a queue behind it. Each actor asks for the
resources it needs (``"CPU=1,GPU=0,browser=1"``: CPUs, GPUs, custom resources a node offers).

Faults: an actor whose process dies (kill -9, OOM, a lost node) is restarted by Ray (or
replaced) and its item resubmitted, at most ``retries`` times per item; an exception raised
by the step itself is not retried and propagates unchanged.

``ray`` stays optional: nothing here imports it until an executor or session is used.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import threading
import time
from collections import deque
from types import ModuleType
from typing import Any, Callable, Iterator, Mapping, Sequence

from mcts_agent.errors import ConfigError, EnvError
from mcts_agent.executor import SKIPPED, Executor

log = logging.getLogger(__name__)

RAY_MISSING = "Ray is not installed; install it with: pip install 'mcts-agent[ray]'"
LOCAL, AUTO = "local", "auto"


def import_ray() -> ModuleType:
    """The ``ray`` module, or a ConfigError naming the fix."""
    try:
        import ray
    except ImportError as e:
        if e.name == "ray":
            raise ConfigError(RAY_MISSING) from None
        raise ConfigError(f"{RAY_MISSING} (importing it failed: {e})") from None
    return ray


def check_resources(spec: str | Mapping[str, float], what: str) -> None:
    """Raise ConfigError naming ``what`` unless ``spec`` parses (see ``parse_resources``)."""
    try:
        parse_resources(spec)
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}") from None


def parse_resources(spec: str | Mapping[str, float]) -> dict[str, float]:
    """``"CPU=1,GPU=0.5,browser=1"`` (or a dict) as ``{name: amount}``; amounts are numbers >= 0."""
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    elif isinstance(spec, str):
        items = []
        for part in (p.strip() for p in spec.split(",")):
            name, eq, value = part.partition("=")
            if not part:
                continue
            if not eq or not name.strip():
                raise ConfigError(f"Ray resources {spec!r}: expected NAME=AMOUNT pairs such as 'CPU=1,GPU=0,browser=1', "
                                  f"got {part!r}")
            items.append((name.strip(), value.strip()))
    else:
        raise ConfigError(f"Ray resources must be a string like 'CPU=1,browser=1' or a dict, got {spec!r}")
    out: dict[str, float] = {}
    for name, value in items:
        try:
            amount = float(value)
        except (TypeError, ValueError):
            amount = -1.0
        if not amount >= 0 or amount == float("inf"):
            raise ConfigError(f"Ray resources {spec!r}: {name} must be a number >= 0, got {value!r}")
        out[name] = amount
    return out


def actor_options(resources: Mapping[str, float]) -> dict[str, Any]:
    """``ray.remote`` options for ``resources`` (CPU and GPU default to 1 and 0)."""
    custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU")}
    return {"num_cpus": resources.get("CPU", 1.0), "num_gpus": resources.get("GPU", 0.0),
            **({"resources": custom} if custom else {})}


def connect(address: str | None = None) -> bool:
    """Connect this process to Ray unless it already is; True when this call connected it.

    ``address``: ``host:port`` or ``ray://...`` (a running cluster), ``local`` (start a new
    cluster in this process), ``auto`` or None (``RAY_ADDRESS``, else the cluster ``ray start``
    made on this machine, else a new local one; a stale record of a dead cluster is removed).
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    target = None if address in (None, AUTO) else address
    if target is None and not os.environ.get("RAY_ADDRESS"):
        record = _cluster_record()
        if record is None or not os.path.exists(record) or _stale(record):
            target = LOCAL  # no cluster runs here: start one
    kwargs: dict[str, Any] = {}
    if target == LOCAL:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=target, **kwargs)
    except Exception as e:  # ConnectionError, AuthenticationError, RuntimeError, ...: one clear line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        chain = " ".join(str(x) for x in (e, e.__cause__, e.__context__) if x is not None)
        hint = ("; authentication failed (InvalidAuthToken): every process of a cluster needs the same "
                "RAY_AUTH_MODE, and with token auth the same RAY_AUTH_TOKEN" if "InvalidAuthToken" in chain else "")
        raise ConfigError(f"cannot connect to the Ray cluster {address or AUTO!r}: {first}{hint}") from e
    return True


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Hold one Ray connection for a block (many searches share it); disconnect at the end if
    this block connected, which also stops a local cluster it started."""
    ray = import_ray()
    owned = connect(address)
    try:
        yield
    finally:
        if owned and ray.is_initialized():
            ray.shutdown()


def _cluster_record() -> str | None:
    try:
        from ray._common.utils import get_ray_address_file
    except ImportError:
        return None
    return get_ray_address_file(None)


def _stale(path: str) -> bool:
    """Whether the ``ray_current_cluster`` record at ``path`` names a dead cluster; if so it is removed."""
    try:
        with open(path, encoding="utf-8") as f:
            host, _, port = f.read().strip().rpartition(":")
        with socket.create_connection((host, int(port)), timeout=1.0):
            return False
    except (OSError, ValueError):
        log.warning("removing the stale Ray cluster record %s (no cluster answers there)", path)
        with contextlib.suppress(OSError):
            os.remove(path)
        return True


# ----- moving an env to the workers -----------------------------------------------------
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def _fresh_lock(reentrant: bool) -> Any:
    return threading.RLock() if reentrant else threading.Lock()


def env_bytes(env: Any) -> bytes:
    """``env`` pickled for another process. Locks guard one process's state, so a worker's copy
    gets fresh ones; anything else that cannot travel (threads, open pools) is an EnvError."""
    from ray import cloudpickle

    class _Pickler(cloudpickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if type(obj) in _LOCK_TYPES:
                return _fresh_lock, (type(obj) is _LOCK_TYPES[1],)
            return super().reducer_override(obj)

    buf = io.BytesIO()
    try:
        _Pickler(buf).dump(env)
    except Exception as e:
        raise EnvError(f"the env {type(env).__name__} cannot be sent to Ray workers: {e}; "
                       "make it picklable (its sandbox or browser pool should be built lazily, in the worker)") from e
    return buf.getvalue()


class EnvWorker:
    """A Ray actor holding one copy of the env; runs ``fn(env, item)``.

    The env comes as a nested object ref with every call and is fetched on first use, so an
    actor that Ray restarts after a crash loads it again by itself.
    """

    def __init__(self) -> None:
        self.env: Any = None

    def _env(self, box: list) -> Any:
        if self.env is None:
            import pickle

            import ray

            self.env = pickle.loads(ray.get(box[0]))
        return self.env

    def ready(self, box: list) -> tuple[int, str]:
        import ray

        self._env(box)
        return os.getpid(), ray.get_runtime_context().get_node_id()

    def run(self, fn: Callable[[Any, Any], Any], item: Any, box: list) -> Any:
        return fn(self._env(box), item)

    def close(self) -> None:
        """Close the env (its sandboxes, browsers) before the actor is killed."""
        if self.env is not None and hasattr(self.env, "close"):
            self.env.close()


_REMOTE: dict[type, Any] = {}


def remote_class(cls: type) -> Any:
    """``ray.remote(cls)``, made once per process."""
    if cls not in _REMOTE:
        _REMOTE[cls] = import_ray().remote(cls)
    return _REMOTE[cls]


def worker_lost(e: BaseException) -> bool:
    """Whether ``e`` says a worker process died (retry the item), not that the item failed."""
    import ray.exceptions as rex

    return isinstance(e, (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.OutOfMemoryError))


def unwrap(e: BaseException) -> BaseException:
    """The exception raised inside the worker, if ``e`` carries one."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


class RayExecutor(Executor):
    """Steps on ``workers`` Ray actors, each holding its own copy of the env.

    ``address``: see ``connect`` (used only if this process is not connected yet);
    ``resources``: what each actor asks for; ``retries``: resubmissions of one item after its
    worker died; ``strategy``: Ray scheduling strategy (``SPREAD`` puts actors on many nodes);
    ``start_timeout``: seconds to wait for the actors to start.
    """

    def __init__(self, workers: int = 1, *, address: str | None = None, resources: str | Mapping[str, float] = "CPU=1",
                 retries: int = 3, strategy: str = "SPREAD", start_timeout: float = 120.0) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"env executor workers must be an int >= 1, got {workers!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"Ray retries must be an int >= 0, got {retries!r}")
        import_ray()
        self.workers = workers
        self.address = address
        self.resources = parse_resources(resources)
        self.retries = retries
        self.strategy = strategy
        self.start_timeout = start_timeout
        self.restarts = 0  # worker deaths survived
        self._actors: list[Any] = []
        self._env: Any = None
        self._env_ref: Any = None
        self._owns = False

    # ----- lifecycle ----------------------------------------------------------------
    def _start(self, env: Any) -> None:
        if self._actors and self._env is env:
            return
        self._stop_actors()
        import ray

        self._owns = connect(self.address) or self._owns
        self._wait_for_capacity(ray)
        self._env_ref = ray.put(env_bytes(env))
        self._env = env
        self._actors = [self._new_actor() for _ in range(self.workers)]
        ready = [a.ready.remote([self._env_ref]) for a in self._actors]
        done, waiting = ray.wait(ready, num_returns=len(ready), timeout=self.start_timeout)
        if waiting:
            self._stop_actors()
            raise ConfigError(f"only {len(done)} of {self.workers} Ray env workers started within "
                              f"{self.start_timeout:g} s (each asks for {self.resources}; the cluster has "
                              f"{ray.available_resources()} free); lower env_workers or ray_resources")
        try:
            ray.get(done)
        except Exception as e:
            self._stop_actors()
            raise EnvError(f"Ray env workers could not load the env {type(env).__name__}: {unwrap(e)}") from e

    def _new_actor(self) -> Any:
        opts = actor_options(self.resources)
        return remote_class(EnvWorker).options(**opts, max_restarts=self.retries, max_task_retries=0,
                                               scheduling_strategy=self.strategy).remote()

    def _wait_for_capacity(self, ray: ModuleType, grace: float = 15.0) -> None:
        """Refuse what cannot start (instead of actors pending forever): at once if the cluster is too
        small, after ``grace`` seconds if it is busy (killed actors free their resources with a delay)."""
        deadline = time.monotonic() + grace
        while True:
            total = ray.cluster_resources()
            short = self._short_of(total, total)  # too small: no waiting helps
            if short is None:
                short = self._short_of(ray.available_resources(), total)
                if short is not None and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
            break
        if short is not None:
            raise ConfigError(short)

    def _short_of(self, free: Mapping[str, float], total: Mapping[str, float]) -> str | None:
        """Why ``free`` cannot hold this pool, or None."""
        need = {"CPU": 1.0, "GPU": 0.0, **self.resources}
        for name, amount in need.items():
            want = amount * self.workers
            if amount > 0 and want > free.get(name, 0.0) + 1e-9:
                return (f"{self.workers} Ray env workers need {name}={want:g} in all ({name}={amount:g} each), "
                        f"but the cluster has {name}={free.get(name, 0.0):g} free ({total.get(name, 0.0):g} in all); "
                        "lower env_workers or ray_resources, or add nodes that offer it")
        return None

    def worker_pids(self) -> list[tuple[int, str]]:
        """``(pid, node id)`` of each live actor (for monitoring and fault tests)."""
        import ray

        return list(ray.get([a.ready.remote([self._env_ref]) for a in self._actors]))

    def _stop_actors(self) -> None:
        if self._actors:
            import ray

            with contextlib.suppress(Exception):  # let each env close its browsers and sandboxes, briefly
                ray.wait([a.close.remote() for a in self._actors], num_returns=len(self._actors), timeout=10)
            for a in self._actors:
                with contextlib.suppress(Exception):
                    ray.kill(a, no_restart=True)
        self._actors, self._env, self._env_ref = [], None, None

    def close(self) -> None:
        self._stop_actors()
        if self._owns:
            import ray

            if ray.is_initialized():
                ray.shutdown()
            self._owns = False

    # ----- one round ----------------------------------------------------------------
    def map(self, fn, env, items, deadlines=None):  # type: ignore[no-untyped-def]
        deadlines = list(deadlines or [None] * len(items))
        if not items:
            return []
        self._start(env)
        return self._dispatch(fn, list(items), deadlines)

    def _dispatch(self, fn: Callable[[Any, Any], Any], items: Sequence[Any],
                  deadlines: Sequence[float | None]) -> list[Any]:
        import ray

        results: list[Any] = [None] * len(items)
        attempts = [0] * len(items)
        todo = deque(range(len(items)))
        idle = deque(range(len(self._actors)))
        running: dict[Any, tuple[int, int]] = {}  # ref -> (actor slot, item index)
        try:
            while todo or running:
                while todo and idle:
                    i = todo.popleft()
                    if deadlines[i] is not None and time.perf_counter() >= deadlines[i]:
                        results[i] = SKIPPED
                        continue
                    slot = idle.popleft()
                    running[self._actors[slot].run.remote(fn, items[i], [self._env_ref])] = (slot, i)
                if not running:
                    break
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    slot, i = running.pop(ref)
                    try:
                        results[i] = ray.get(ref)
                    except Exception as e:
                        if not worker_lost(e):
                            raise unwrap(e) from e
                        attempts[i] += 1
                        if attempts[i] > self.retries:
                            raise EnvError(f"env step {i} of this round lost its Ray worker {attempts[i]} times "
                                           f"(retries={self.retries}); last: {str(e).splitlines()[0]}") from e
                        self._recover(slot, e, attempts[i])
                        todo.appendleft(i)
                    idle.append(slot)
        except BaseException:
            for ref in running:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            raise
        return results

    def _recover(self, slot: int, e: BaseException, attempt: int) -> None:
        """After a worker died: Ray restarts an actor with restarts left; a dead one is replaced.
        A short backoff first, so the resubmission does not reach the dead process again."""
        import ray.exceptions as rex

        self.restarts += 1
        log.warning("Ray env worker %d died (%s); retrying its step", slot, type(e).__name__)
        time.sleep(min(2.0, 0.25 * 2 ** (attempt - 1)))
        if isinstance(e, rex.ActorDiedError):
            import ray

            with contextlib.suppress(Exception):
                ray.kill(self._actors[slot], no_restart=True)
            self._actors[slot] = self._new_actor()

"""One ScienceWorld simulator in a JVM of its own: start, load/reset, the fast step, gold paths, and its lifecycle.

The world is PyPI ``scienceworld==1.2.3`` (Apache-2.0): its Scala simulator ships as
``scienceworld.jar`` and is driven through py4j. ``Simulator`` wraps the package's own
``ScienceWorldEnv`` (task-name checks, ``load``, splits, gold paths, score conversion) but
starts the JVM itself, so that it can

* bound the JVM's heap (``-Xmx{heap_mb}m``, serial GC, C1 only: 0.17 GB resident after a reset
  and 0.40 GB after boil's 90-action gold path measured here, against 0.7-0.8 GB with the JVM's
  defaults; ``JVM_MEMORY_MB`` is the budget a pool reserves per instance);
* make it deterministic (``DETERMINISTIC_OPTS``: without them a room's contents are listed
  in a different order after each reset, and replay could not reach a recorded state);
* put it in a process group of its own (a Ctrl-C in the terminal reaches Python, whose
  unwinding closes the JVM, not the JVM mid-step), and
* stop it on ``close()``, at interpreter exit, when collected, and on SIGTERM/SIGHUP (every
  live JVM, then the signal's previous handler); py4j's ``--die-on-broken-pipe`` also ends
  it if this process is killed outright (its stdin closes).

The fast step: the package's ``ScienceWorldEnv.step`` asks the JVM for every valid
action-object combination (``get_valid_action_object_combinations``, ~0.1-0.2 s) plus the
look/inventory/task texts after every action, for its info dict. ``Simulator.step`` makes
the same server calls the package's step makes for its return values (``server.step``,
``getScore`` converted as the package does, ``getCompleted``) and nothing else; valid
actions are asked for only by ``valid_actions()``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import subprocess
import tempfile
import weakref
from dataclasses import dataclass
from typing import Any

from mcts_agent.errors import EnvError
from mcts_agent.lifecycle import Registry

HEAP_MB = 512  # -Xmx of each JVM; gold-path generation of the largest tasks fits in it
JVM_MEMORY_MB = 600  # what one JVM is budgeted (heap + metaspace + threads; 170-400 MB resident measured)
MAX_DEFAULT_INSTANCES = 4  # the memory-derived default pool size is capped here (2-core machines)
JAVA_OPTS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss4m")
# Every object's identity hash is the same constant: the simulator lists a room's contents in
# hash-set order, which with the JVM's default (random) identity hashes differs from one reset
# to the next; with this the same (task, variation, actions) shows the same text in every JVM,
# so replay reaches the recorded state. Measured cost: ~1.2x per action (boil 21's gold path: 38 ms vs 32).
DETERMINISTIC_OPTS = ("-XX:+UnlockExperimentalVMOptions", "-XX:hashCode=2")
NO_MATCH = "No known action matches that input."  # ScienceWorld's own reply to an action it cannot parse
INSTALL_HINT = "install Java with scripts/install_system_deps.sh (default-jre-headless) and pip install -e '.[agents]'"

LIVE = Registry("scienceworld-jvm")  # every JVM this process started and has not stopped (keyed by pid)


def java_path() -> str:
    """The ``java`` to run: ``$JAVA_HOME/bin/java``, else the first on ``PATH``; ``EnvError`` if none."""
    home = os.environ.get("JAVA_HOME")
    candidates = [os.path.join(home, "bin", "java")] if home else []
    candidates += [os.path.join(d, "java") for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise EnvError(f"ScienceWorld needs a Java runtime and none was found (JAVA_HOME, PATH); {INSTALL_HINT}")


def scienceworld_available() -> str | None:
    """None when Java and the scienceworld package are both here, else why not (for test skips)."""
    try:
        java_path()
        import scienceworld  # noqa: F401
    except (EnvError, ImportError) as e:
        return str(e)
    return None


def default_max_instances(available_mb: int | None = None) -> int:
    """Live JVMs a pool may hold by default: half the available memory / ``JVM_MEMORY_MB``, in [1, 4]."""
    if available_mb is None:
        available_mb = _available_mb()
    return max(1, min(MAX_DEFAULT_INSTANCES, int(available_mb * 0.5) // JVM_MEMORY_MB))


def _available_mb() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") // 2**20


@dataclass(frozen=True)
class SimResult:
    """What the simulator shows after a reset or an action (scores as the package reports them: 0-100)."""

    observation: str
    score: int
    completed: bool  # the simulator's own task-completed flag
    valid: tuple[str, ...] | None = None  # valid actions, where asked for (not part of the hash)

    @property
    def failed(self) -> bool:
        """The package ends an episode whose score went below zero (a wrong focus, a dead plant)."""
        return self.score < 0

    @property
    def hash(self) -> str:
        return hashlib.sha256(f"{self.score}|{int(self.completed)}|{self.observation}".encode()).hexdigest()[:16]


def fingerprint(result: SimResult) -> str:
    """What replay compares (``ReplayPool(fingerprint=...)``): the observation and score's hash."""
    return result.hash


class Simulator:
    """One ScienceWorld JVM that resets to ``(task name, variation)`` keys and takes text actions."""

    def __init__(self, *, heap_mb: int = HEAP_MB, deterministic: bool = True, java: str | None = None) -> None:
        if not isinstance(heap_mb, int) or isinstance(heap_mb, bool) or heap_mb < 128:
            raise EnvError(f"heap_mb must be an int >= 128 (MB of JVM heap), got {heap_mb!r}")
        self.heap_mb, self.deterministic, self.java = heap_mb, deterministic, java
        self.proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None
        self._env: Any = None
        self.loaded: tuple[str, int] | None = None
        self.gold_loaded = False
        self.starts = 0  # JVMs started (a dead one is replaced on the next use)

    @property
    def env(self) -> Any:
        """The package's ``ScienceWorldEnv`` on this instance's JVM (started here on first use, or after it died)."""
        if not self.alive:
            self._start()
        return self._env

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.alive and self.proc is not None else None

    def _start(self) -> None:
        try:
            from py4j.java_gateway import CallbackServerParameters, GatewayParameters, JavaGateway, launch_gateway
            from scienceworld.constants import BASEPATH, JAR_PATH
        except ImportError as e:
            raise EnvError(f"ScienceWorld needs the scienceworld package: {e}; {INSTALL_HINT}") from e
        self.close()
        self.loaded, self.gold_loaded = None, False
        java = self.java or java_path()
        opts = [f"-Xmx{self.heap_mb}m", *JAVA_OPTS, *(DETERMINISTIC_OPTS if self.deterministic else ())]
        try:
            port, proc = launch_gateway(classpath=JAR_PATH, die_on_exit=True, cwd=BASEPATH, return_proc=True,
                                        java_path=java, create_new_process_group=True, javaopts=opts)
        except Exception as e:
            raise EnvError(f"could not start the ScienceWorld JVM with {java}: {type(e).__name__}: {e}") from e
        self.proc, self.starts = proc, self.starts + 1
        self._finalizer = _track(self, None, proc)
        try:
            gateway = JavaGateway(gateway_parameters=GatewayParameters(auto_field=True, port=port),
                                  callback_server_parameters=CallbackServerParameters(port=0, daemonize=True),
                                  java_process=proc)
            # The package's own wrapper on our JVM (its __init__ would start a JVM of its own).
            env = object.__new__(_package_env_class())
            env.attach(gateway, gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface())
            self._finalizer.detach()
            self._finalizer = _track(self, gateway, proc, env._obj_tree_tempdir)
        except Exception as e:
            self.close()
            raise EnvError(f"could not connect to the ScienceWorld JVM (pid {proc.pid}): {type(e).__name__}: {e}") from e
        self._env = env

    @property
    def alive(self) -> bool:
        return self._finalizer is not None and self._finalizer.alive and self.proc is not None \
            and self.proc.poll() is None

    def load(self, key: tuple[str, int], gold: bool = False) -> None:
        """Load task ``key = (name, variation)`` (``gold``: also generate its gold path)."""
        name, variation = key
        try:
            self.env.load(name, int(variation), "", generateGoldPath=gold)
        except ValueError as e:
            raise EnvError(f"ScienceWorld cannot load task {name!r}: {e}") from None
        self.loaded, self.gold_loaded = (name, int(variation)), gold

    def reset(self, key: tuple[str, int]) -> SimResult:
        """Start task ``key``: load it (or reset it where it is loaded), then the package's first move, "look around"."""
        env = self.env  # starts a JVM where there is none
        try:
            if self.loaded != tuple(key):
                self.load(key)
            else:
                env.server.reset()
            env.lastStepScore = 0
        except EnvError:
            raise
        except Exception as e:
            raise self._failed("reset", key, e) from e
        return self.step("look around")

    def step(self, action: str) -> SimResult:
        """One action through the package's own server calls, without enumerating valid actions."""
        env = self.env
        try:
            server = env.server
            observation = str(server.step(action))
            score = int(round(100 * server.getScore()))  # the package's conversion (ScienceWorldEnv.step)
            completed = bool(server.getCompleted())
        except Exception as e:
            raise self._failed("step", action, e) from e
        env.lastStepScore = score
        return SimResult(observation, score, completed)

    def _failed(self, what: str, arg: Any, e: Exception) -> EnvError:
        pid = self.proc.pid if self.proc is not None else None
        self.close()  # an unknown JVM state: the next use starts a new one
        return EnvError(f"the ScienceWorld JVM (pid {pid}) failed on {what} {arg!r}: {type(e).__name__}: {e}")

    def valid_actions(self) -> list[str]:
        """The package's valid action-object combinations in the current state (slow: ~0.1-0.2 s)."""
        return sorted(self.env.get_valid_action_object_combinations())

    def description(self, key: tuple[str, int]) -> str:
        """The task description of ``key`` (loads it unless it is the one loaded)."""
        if self.loaded != tuple(key) or not self.alive:
            self.load(key)
        return str(self.env.get_task_description())

    def splits(self, name: str) -> dict[str, list[int]]:
        """ScienceWorld's own train/dev/test variation indices of task ``name`` (loads it)."""
        self.load((name, 0))
        return {"train": self.env.get_variations_train(), "dev": self.env.get_variations_dev(),
                "test": self.env.get_variations_test()}

    def gold_actions(self, key: tuple[str, int]) -> list[str]:
        """The package's gold action sequence of task ``key`` (it loads the task with its gold path)."""
        self.load(key, gold=True)
        out = [str(a) for a in self.env.get_gold_action_sequence()]
        if out and out[0].startswith("ERROR"):
            raise EnvError(f"ScienceWorld gave no gold path for {key!r}: {out[0]}")
        return out

    def close(self) -> None:
        """Stop the JVM (idempotent; the next use starts a new one)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.lru_cache(maxsize=1)
def _package_env_class() -> type:
    """The package's ``ScienceWorldEnv`` on a JVM started by ``Simulator``, whose lifecycle is ``Simulator``'s
    (made on first use, so importing this module imports neither py4j nor the package)."""
    from scienceworld import ScienceWorldEnv

    class PackageEnv(ScienceWorldEnv):
        def attach(self, gateway: Any, server: Any) -> None:
            # What the package's own __init__ sets, after its JVM launch.
            self._gateway, self.server = gateway, server
            self.lastStepScore, self.taskName, self.envStepLimit = 0, None, 10**9  # max_steps truncates, not this
            self.simplificationStr, self.variationIdx = "", 0
            self.clear_run_histories()
            self.goldPathGenerated = False
            self._obj_tree_tempdir = tempfile.TemporaryDirectory()

        def close(self) -> None:
            pass  # Simulator.close stops the JVM

        def __del__(self) -> None:
            pass

    return PackageEnv


# ----- lifecycle ---------------------------------------------------------------------------
def close_all() -> None:
    """Stop every ScienceWorld JVM this process started and has not stopped."""
    LIVE.close_all()


def live_pids() -> list[int]:
    """PIDs of the JVMs this process has started and not stopped."""
    return [int(pid) for pid in LIVE.keys()]  # type: ignore[call-overload]


def _track(owner: object, gateway: Any, proc: subprocess.Popen,
           tmp: tempfile.TemporaryDirectory | None = None) -> weakref.finalize:
    def stop() -> None:
        _stop_jvm(gateway, proc)
        if tmp is not None:
            tmp.cleanup()  # the package's object-tree folder

    return LIVE.track(owner, stop, key=proc.pid)


def _stop_jvm(gateway: Any, proc: subprocess.Popen) -> None:
    if gateway is not None:
        try:
            gateway.shutdown()
        except Exception:  # noqa: BLE001 - a dead or wedged JVM is killed below
            pass
    try:
        if proc.stdin is not None:
            proc.stdin.close()  # --die-on-broken-pipe: the gateway exits when its stdin closes
        proc.wait(timeout=3)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own process group: the JVM and anything it started
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait(timeout=10)

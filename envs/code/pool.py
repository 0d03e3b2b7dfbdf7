"""Run many sandboxed programs at once, results in input order.

Each worker thread spawns one isolated process at a time (the threads only wait on pipes,
so the GIL is not the bottleneck); ``max_workers`` bounds how many run concurrently.

    pool = SandboxPool(SandboxConfig(timeout_s=5), max_workers=4)
    results = pool.run_many(["assert True", "assert False"])
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig, SandboxResult
from mcts_agent.errors import ConfigError, EnvError


class SandboxPool:
    """A bounded pool of sandbox workers sharing one ``SandboxConfig``."""

    def __init__(self, config: SandboxConfig | Sandbox | None = None, max_workers: int | None = None) -> None:
        self._owns_sandbox = not isinstance(config, Sandbox)
        self.sandbox = config if isinstance(config, Sandbox) else Sandbox(config)
        workers = max_workers if max_workers is not None else min(32, (os.cpu_count() or 1) + 2)
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigError(f"SandboxPool max_workers must be an int >= 1, got {max_workers!r}")
        self.max_workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def config(self) -> SandboxConfig:
        return self.sandbox.config

    def run_many(self, programs: Sequence[str], *, tests: Sequence[str | None] | None = None,
                 as_main: bool = True, timeout_s: float | None = None) -> list[SandboxResult]:
        """Run every program (with ``tests[i]`` if given); ``results[i]`` is ``programs[i]``'s."""
        if isinstance(programs, str):
            raise EnvError("run_many needs a sequence of programs, got a single str")
        programs = list(programs)
        test_list = list(tests) if tests is not None else [None] * len(programs)
        if len(test_list) != len(programs):
            raise EnvError(f"run_many got {len(programs)} programs but {len(test_list)} tests; expected one each")
        for i, p in enumerate(programs):
            if not isinstance(p, str):
                raise EnvError(f"programs[{i}] must be Python source as a str, got {type(p).__name__}")

        def one(i: int) -> SandboxResult:
            return self.sandbox.run(programs[i], tests=test_list[i], as_main=as_main, timeout_s=timeout_s)

        if len(programs) <= 1 or self.max_workers == 1:
            return [one(i) for i in range(len(programs))]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="sandbox")
            executor = self._executor
        return list(executor.map(one, range(len(programs))))

    def close(self) -> None:
        """Stop the worker threads, and the sandbox's warm zygotes if this pool made the sandbox."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._owns_sandbox:
            self.sandbox.close()

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

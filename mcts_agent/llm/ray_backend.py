"""A policy (or critic) backend served by Ray actors: one model replica per actor.

``RayBackend(spec, replicas=4, resources="GPU=1")`` loads ``spec`` (a ``BackendSpec``, or a
picklable zero-argument factory returning a ``Backend``) inside each of ``replicas`` actors;
with ``GPU=1`` Ray gives each replica its own GPU (``CUDA_VISIBLE_DEVICES``). Each batched
call is split into contiguous slices, one per replica, run at once and joined in input
order, so the planner still makes one call per round. A replica whose process dies is
restarted (its model loaded again) and its slice resubmitted, at most ``retries`` times.

Sampling is per replica: with a sampling backend, which replica serves a request depends on
the batch's split, so runs are reproducible for a fixed batch shape and replica count.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from typing import Any, Callable, Mapping, Sequence

from mcts_agent.errors import BackendError, ConfigError, ModelLoadError
from mcts_agent.llm.spec import BackendSpec
from mcts_agent.llm.types import Backend, Completion, GenerationRequest
from mcts_agent.ray_executor import actor_options, connect, parse_resources, remote_class, unwrap, worker_lost


def _load_spec(spec: BackendSpec, options: dict[str, Any]) -> Backend:
    return spec.load(**options)


class PolicyReplica:
    """A Ray actor holding one loaded backend; forwards calls to it."""

    def __init__(self, factory: Callable[[], Backend]) -> None:
        self.backend = factory()

    def info(self) -> dict[str, Any]:
        import ray

        return {"name": self.backend.name, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}

    def call(self, method: str, *args: Any) -> tuple[Any, int]:
        """``backend.method(*args)`` and the prompt tokens it read."""
        before = self.backend.stats.prompt_tokens
        out = getattr(self.backend, method)(*args)
        return out, self.backend.stats.prompt_tokens - before

    def close(self) -> None:
        self.backend.close()


def split(weights: Sequence[int], parts: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, end)`` slices of ``weights``, at most ``parts``, of about equal sums; none empty."""
    total, out, start, acc = sum(weights), [], 0, 0
    parts = max(1, min(parts, len(weights)))
    for i, w in enumerate(weights):
        acc += w
        left_items, left_parts = len(weights) - i - 1, parts - len(out) - 1
        if left_parts and (acc >= total * (len(out) + 1) / parts or left_items == left_parts):
            out.append((start, i + 1))
            start = i + 1
    out.append((start, len(weights)))
    return [s for s in out if s[0] < s[1]]


class RayBackend(Backend):
    """``replicas`` copies of a backend on Ray actors, behind the batched ``Backend`` contract."""

    def __init__(self, spec: BackendSpec | Callable[[], Backend], replicas: int = 1, *,
                 resources: str | Mapping[str, float] = "CPU=1", address: str | None = None, retries: int = 1,
                 load_options: dict[str, Any] | None = None, start_timeout: float = 1800.0) -> None:
        super().__init__()
        if not isinstance(replicas, int) or replicas < 1:
            raise ConfigError(f"policy replicas must be an int >= 1, got {replicas!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ConfigError(f"replica retries must be an int >= 0, got {retries!r}")
        if isinstance(spec, BackendSpec):
            factory: Callable[[], Backend] = functools.partial(_load_spec, spec, dict(load_options or {}))
        elif callable(spec):
            factory = spec
        else:
            raise ConfigError(f"RayBackend needs a BackendSpec or a backend factory, got {spec!r}")
        self.retries = retries
        self.restarts = 0
        self._options = {**actor_options(parse_resources(resources)), "max_restarts": retries, "max_task_retries": 0}
        self._owns = connect(address)
        import ray

        self._replicas = [remote_class(PolicyReplica).options(**self._options).remote(factory)
                          for _ in range(replicas)]
        info = [r.info.remote() for r in self._replicas]
        done, waiting = ray.wait(info, num_returns=len(info), timeout=start_timeout)
        if waiting:
            self.close()
            raise ModelLoadError(f"only {len(done)} of {replicas} policy replicas started within {start_timeout:g} s "
                                 f"(each asks for {resources!r}; the cluster has {ray.available_resources()} free)")
        try:
            self.replica_info = ray.get(info)
        except Exception as e:
            self.close()
            raise ModelLoadError(f"a policy replica failed to load its backend: {unwrap(e)}") from e
        self.name = f"ray[{self.replica_info[0]['name']}]"

    # ----- the batched contract -----------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        if not requests:
            return []
        t0 = time.perf_counter()
        slices = split([r.n for r in requests], len(self._replicas))
        outs = self._fan_out("generate", [(list(requests[a:b]),) for a, b in slices])
        result = [c for part in outs for c in part]
        self.stats.calls += 1
        self.stats.prompts += len(requests)
        self.stats.generated_tokens += sum(len(c.token_ids) for cs in result for c in cs)
        self.stats.seconds += time.perf_counter() - t0
        return result

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        if len(prompts) != len(continuations):
            raise ConfigError(f"score needs one continuation per prompt, got {len(prompts)} and {len(continuations)}")
        if not prompts:
            return []
        self.stats.score_calls += 1
        slices = split([1] * len(prompts), len(self._replicas))
        outs = self._fan_out("score", [(list(prompts[a:b]), list(continuations[a:b])) for a, b in slices])
        return [v for part in outs for v in part]

    def next_token_logprobs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[list[float]]:
        if not prompts:
            return []
        slices = split([1] * len(prompts), len(self._replicas))
        outs = self._fan_out("next_token_logprobs", [(list(prompts[a:b]), list(candidates)) for a, b in slices])
        return [row for part in outs for row in part]

    def format_chat(self, messages: Sequence[dict[str, str]], tools: Sequence[dict[str, Any]] | None = None) -> str:
        return self._fan_out("format_chat", [(list(messages), tools)])[0]

    def count_tokens(self, text: str) -> int:
        return self._fan_out("count_tokens", [(text,)])[0]

    # ----- plumbing -----------------------------------------------------------------
    def _fan_out(self, method: str, args: list[tuple]) -> list[Any]:
        """``method(*args[k])`` on replica k, all at once; results in order; lost replicas retried."""
        import ray

        refs = [self._replicas[k].call.remote(method, *a) for k, a in enumerate(args)]
        results: list[Any] = [None] * len(refs)
        for k, ref in enumerate(refs):
            for attempt in range(self.retries + 1):
                try:
                    results[k], read = ray.get(ref)
                    self.stats.prompt_tokens += read
                    break
                except Exception as e:
                    if not worker_lost(e):
                        raise unwrap(e) from e
                    if attempt == self.retries:
                        raise BackendError(f"policy replica {k} died {attempt + 1} times during {method} "
                                           f"(retries={self.retries}); last: {str(e).splitlines()[0]}") from e
                    self.restarts += 1
                    time.sleep(min(2.0, 0.25 * 2 ** attempt))  # let Ray notice the death and start the restart
                    ref = self._replicas[k].call.remote(method, *args[k])  # Ray restarts it, reloading the model
        return results

    def close(self) -> None:
        import ray

        replicas, self._replicas = getattr(self, "_replicas", []), []
        if replicas and ray.is_initialized():
            with contextlib.suppress(Exception):
                ray.wait([r.close.remote() for r in replicas], num_returns=len(replicas), timeout=60)
            for r in replicas:
                with contextlib.suppress(Exception):
                    ray.kill(r, no_restart=True)
        if getattr(self, "_owns", False):
            self._owns = False
            if ray.is_initialized():
                ray.shutdown()

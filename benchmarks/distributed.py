"""Env steps on Ray workers against the local executor: slow env, sandbox workload, per-step overhead.

Three measurements, run side by side in this one process against one Ray cluster:

* ``slow_env``: MCTS on ``demo/counter`` with a fixed sleep per step (a page load, a tool call),
  scripted policy (free), so a run's wall time is its env steps: local threads against Ray
  actors, 1, 2 and 4 workers; speedup against one local worker.
* ``sandbox``: a round of MBPP reference solutions submitted as code-env steps with outcome
  rewards, each run against its hidden tests in the sandbox: a fresh env per configuration
  (no cached verdicts), one warm-up round of other tasks first (zygotes, threads).
* ``overhead``: instant steps (no sleep) through one Ray worker against calling them in this
  process: the extra cost of one remote step (round trip, pickling state and result).

``--ray local`` starts a private local cluster with ``--ray-cpus`` logical CPUs (more than the
machine's cores is fine for sleep-bound steps); an address joins a running cluster.

    python -m mcts_agent.benchmarks.distributed --out results/distributed.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from mcts_agent.benchmarks.common import print_table, write_result
from mcts_agent.envs.demo import CounterEnv
from mcts_agent.executor import Executor, SerialExecutor, make_executor
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.search import Planner, SearchConfig

MBPP = Path(__file__).resolve().parents[2] / "shared" / "data" / "mbpp" / "mbpp.jsonl"


def script(prompt: str, i: int) -> str:
    return f"add({i % 9 + 1})"  # distinct siblings: every sample is one env step


def executors(kind: str, workers: int, resources: str) -> Executor:
    if kind == "ray":
        return make_executor("ray", workers, resources=resources)
    return make_executor("thread", workers)


def slow_env(workers: list[int], delay: float, trees: int, simulations: int, branching: int,
             resources: str) -> list[dict[str, Any]]:
    rows = []
    for kind in ("thread", "ray"):
        for k in workers:
            env = CounterEnv(n=trees, delay=delay, max_steps=simulations + 1)
            cfg = SearchConfig(algo="mcts", simulations=simulations, branching=branching, max_trees_in_flight=trees)
            with executors(kind, k, resources) as ex:
                if kind == "ray":
                    ex.map(_noop, env, [None] * k)  # actors up before the clock starts
                planner = Planner(ScriptedBackend(script), env, cfg, executor=ex)
                t0 = time.perf_counter()
                planner.run(env.tasks)
                wall = time.perf_counter() - t0
            rows.append({"workload": "slow_env", "executor": "local threads" if kind == "thread" else "ray actors",
                         "workers": k, "env_steps": planner.stats.env_steps, "wall_seconds": round(wall, 3),
                         "steps_per_s": round(planner.stats.env_steps / wall, 2)})
    return _speedups(rows)


def _noop(env: Any, item: Any) -> None:
    return None


def _code_step(env: Any, item: tuple) -> float:
    state, action = item
    return env.transition(state, action)[1]  # the reward: 1.0 when the hidden tests pass


def sandbox(workers: list[int], n: int, resources: str) -> list[dict[str, Any]]:
    from mcts_agent import envs

    if not MBPP.exists():
        return [{"workload": "sandbox", "skipped": f"MBPP data not found at {MBPP}"}]
    code = {r["task_id"]: r["code"] for r in map(json.loads, MBPP.read_text().splitlines()) if r.get("code")}
    rows = []
    for kind in ("thread", "ray"):
        for k in workers:
            env = envs.make("code/mbpp", data=str(MBPP), split="all", limit=n + 8, reward_mode="outcome")
            items = [(env.initial_state(t), code[int(t.id.split("-")[1])] + "\n```") for t in env.tasks]
            warm, timed = items[:8], items[8:]
            with executors(kind, k, resources) as ex:
                ex.map(_code_step, env, warm)
                t0 = time.perf_counter()
                rewards = ex.map(_code_step, env, timed)
                wall = time.perf_counter() - t0
            env.close()
            rows.append({"workload": "sandbox", "executor": "local threads" if kind == "thread" else "ray actors",
                         "workers": k, "env_steps": len(timed), "passed": int(sum(rewards)),
                         "wall_seconds": round(wall, 3), "steps_per_s": round(len(timed) / wall, 2)})
    return _speedups(rows)


def overhead(steps: int, resources: str) -> list[dict[str, Any]]:
    env = CounterEnv(n=1)
    state = env.initial_state(env.tasks[0])
    items = [(state, "add(1)")] * steps

    def timed(ex: Executor) -> float:
        ex.map(_step, env, items[:8])
        t0 = time.perf_counter()
        ex.map(_step, env, items)
        return time.perf_counter() - t0

    local = timed(SerialExecutor())
    rows = [{"workload": "overhead", "executor": "in process", "workers": 1, "env_steps": steps,
             "wall_seconds": round(local, 4), "ms_per_step": round(1000 * local / steps, 3)}]
    for k in (1, 4):
        with executors("ray", k, resources) as ex:
            wall = timed(ex)
        rows.append({"workload": "overhead", "executor": "ray actors", "workers": k, "env_steps": steps,
                     "wall_seconds": round(wall, 4), "ms_per_step": round(1000 * wall / steps, 3),
                     "overhead_ms_per_step": round(1000 * (wall - local) / steps, 3)})
    return rows


def _step(env: Any, item: tuple) -> Any:
    return env.transition(*item)


def _speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = next(r["wall_seconds"] for r in rows if r["executor"] == "local threads" and r["workers"] == 1)
    for r in rows:
        r["speedup_vs_1_local"] = round(base / r["wall_seconds"], 2)
    return rows


def start_ray(address: str, cpus: int) -> Callable[[], None]:
    """Connect (or start a local cluster); returns the function that disconnects."""
    from mcts_agent.ray_executor import connect, import_ray

    ray = import_ray()
    if address != "local":
        connect(address)
        return ray.shutdown
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: unix socket paths are limited to 107 bytes
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, _temp_dir=temp)

    def stop() -> None:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    return stop


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ray", default="local", help="Ray cluster address, or local (a private local cluster)")
    p.add_argument("--ray-cpus", type=int, default=4, help="logical CPUs of the local cluster")
    p.add_argument("--resources", default="CPU=1", help="what each Ray env worker asks for")
    p.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    p.add_argument("--delay", type=float, default=0.1, help="seconds every slow-env step sleeps")
    p.add_argument("--trees", type=int, default=8)
    p.add_argument("--simulations", type=int, default=3)
    p.add_argument("--branching", type=int, default=2)
    p.add_argument("--sandbox-steps", type=int, default=32, help="MBPP programs in the timed sandbox round (0: skip)")
    p.add_argument("--overhead-steps", type=int, default=400)
    p.add_argument("--out", default="results/distributed.json")
    a = p.parse_args(argv)
    workers = sorted({int(x) for x in a.workers.split(",")} | {1})
    load = os.getloadavg()
    stop = start_ray(a.ray, a.ray_cpus)
    try:
        rows = slow_env(workers, a.delay, a.trees, a.simulations, a.branching, a.resources)
        if a.sandbox_steps > 0:
            rows += sandbox(workers, a.sandbox_steps, a.resources)
        rows += overhead(a.overhead_steps, a.resources)
        import ray

        cluster = {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")}
    finally:
        stop()
    print_table(f"env steps: local threads vs Ray actors (load {load[0]:.2f}; delay {a.delay}s/step)",
                [r for r in rows if r["workload"] != "overhead"],
                ["workload", "executor", "workers", "env_steps", "wall_seconds", "steps_per_s", "speedup_vs_1_local"])
    print_table("cost of one remote step", [r for r in rows if r["workload"] == "overhead"],
                ["executor", "workers", "env_steps", "ms_per_step", "overhead_ms_per_step"])
    return write_result(a.out, "distributed", vars(a), rows, load_average=list(load), cluster=cluster)


if __name__ == "__main__":
    main()

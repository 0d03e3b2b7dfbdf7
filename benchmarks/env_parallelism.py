"""Slow env steps in parallel: round wall time with k env workers against one worker.

A deliberately slow env (``demo/counter`` with a fixed sleep per step, standing in for a
test run or a page load) is searched by MCTS on the scripted backend, so the policy costs
nothing and a round's wall time is its env steps. Every configuration runs in this one
process, side by side; the figure is the speedup ``t(1) / t(k)`` against the target
``>= 0.8 k``.

    python -m mcts_agent.benchmarks.env_parallelism --workers 1,2,4,8 --delay 0.05 --out results/env_parallelism.json
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from mcts_agent.benchmarks.common import print_table, write_result
from mcts_agent.envs.demo import CounterEnv
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.search import Planner, SearchConfig


def script(prompt: str, i: int) -> str:
    return f"add({i % 9 + 1})"  # distinct siblings: every sample is one env step


def measure(workers: int, executor: str, delay: float, trees: int, branching: int, simulations: int) -> dict[str, Any]:
    env = CounterEnv(n=trees, delay=delay, max_steps=simulations + 1)
    cfg = SearchConfig(algo="mcts", simulations=simulations, branching=branching, env_workers=workers,
                       env_executor=executor, max_trees_in_flight=trees)
    planner = Planner(ScriptedBackend(script), env, cfg)
    t0 = time.perf_counter()
    planner.run(env.tasks)
    wall = time.perf_counter() - t0
    s = planner.stats
    return {"workers": workers, "executor": executor, "rounds": s.rounds, "env_steps": s.env_steps,
            "steps_per_round": s.env_steps / max(1, s.rounds), "round_seconds": wall / max(1, s.rounds),
            "env_fraction": s.env_seconds / wall if wall else 0.0, "wall_seconds": wall}


def run(workers: list[int], delay: float, trees: int, branching: int, simulations: int,
        executor: str = "thread") -> list[dict[str, Any]]:
    rows = [measure(k, executor, delay, trees, branching, simulations) for k in workers]
    base = next(r for r in rows if r["workers"] == 1)["round_seconds"] if 1 in workers else rows[0]["round_seconds"]
    for r in rows:
        r["speedup"] = base / r["round_seconds"]
        r["target"] = 0.8 * r["workers"]
        r["meets_target"] = r["speedup"] >= r["target"]
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2,4,8", help="comma-separated worker counts (1 is the baseline)")
    p.add_argument("--delay", type=float, default=0.05, help="seconds every env step sleeps")
    p.add_argument("--trees", type=int, default=16)
    p.add_argument("--branching", type=int, default=2)
    p.add_argument("--simulations", type=int, default=3)
    p.add_argument("--executor", default="thread", choices=["thread", "process"])
    p.add_argument("--out", default="results/env_parallelism.json")
    a = p.parse_args(argv)
    workers = sorted({int(x) for x in a.workers.split(",")} | {1})
    load = os.getloadavg()[0]
    rows = run(workers, a.delay, a.trees, a.branching, a.simulations, a.executor)
    print_table(f"round wall time with k env workers (delay {a.delay}s/step, load {load:.2f})", rows,
                ["workers", "steps_per_round", "round_seconds", "speedup", "target", "meets_target", "env_fraction"])
    return write_result(a.out, "env_parallelism", vars(a), rows, load_average=load)


if __name__ == "__main__":
    main()

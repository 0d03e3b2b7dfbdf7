"""The ScienceWorld section of ``benchmarks.web_agents`` (``--suite scienceworld``): real JVMs, fixed task variations.

1. **Oracle**: the package's gold action sequences through the planner on ``ORACLE_TASKS``
   (first ``--sw-variations`` test variations each); the package's own completed flag judges them.
2. **Embedded model**: greedy vs MCTS (self-eval critic, evaluation mode) on ``MODEL_TASKS``:
   success with 95% Wilson intervals.
3. **Env steps per second**: the fast step against the package's own ``step`` (which enumerates
   valid actions) along a gold path, and MCTS with a scripted policy (4 trees) over 1, 2 and 4 JVMs.
4. **Seconds per branch** at depth d along a gold path: a new JVM + reset + replay, a reset +
   replay in a live JVM, and a pool hit (the child continues in its parent's JVM).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, Sequence

from mcts_agent.env import Task

ORACLE_TASKS = ("find-living-thing", "find-non-living-thing", "find-animal", "find-plant", "use-thermometer",
                "melt", "freeze", "boil")
MODEL_TASKS = ("find-living-thing", "find-animal", "find-plant", "find-non-living-thing")
BRANCH_KEY = ("boil", 21)  # a 72-action gold path: deep prefixes to replay


def exploring_script(env: Any, tasks: Sequence[Task]) -> Callable[[str, int], str]:
    """Sample 0 follows the gold path; sample ``i > 0`` takes a harmless detour (branches for search)."""
    from mcts_agent.envs.text.scienceworld import oracle_script

    oracle = oracle_script(env, tasks)
    detours = ("look around", "inventory", "look at agent", "wait1")
    return lambda prompt, i: oracle(prompt, 0) if i == 0 else detours[(i - 1) % len(detours)]


def scripted(a: argparse.Namespace) -> argparse.Namespace:
    """``a`` for scripted policies: gold actions run to ~60 characters (one token each in ScriptedBackend)."""
    return argparse.Namespace(**{**vars(a), "max_step_tokens": 200})


def oracle_part(a: argparse.Namespace, run: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    from mcts_agent.envs.text.scienceworld import ScienceWorldEnv, oracle_script
    from mcts_agent.llm.scripted import ScriptedBackend

    rows = []
    with ScienceWorldEnv(task=list(ORACLE_TASKS), variations=a.sw_variations, max_instances=a.pool,
                         max_steps=250) as env:  # boil 22: 174 gold actions
        for name in ORACLE_TASKS:
            tasks = [t for t in env.tasks if t.meta["task"] == name]
            r = run(env, tasks, ScriptedBackend(oracle_script(env, tasks)), "greedy", scripted(a))
            rows.append({"task": name, **{k: r[k] for k in ("tasks", "solved", "success", "env_steps", "seconds")}})
    return rows


def model_part(a: argparse.Namespace, run: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    from mcts_agent.critics import make_critic
    from mcts_agent.envs.text.scienceworld import ScienceWorldEnv
    from mcts_agent.llm import load_backend

    backend = load_backend("transformers", seed=a.seed)
    rows = []
    try:
        with ScienceWorldEnv(task=list(MODEL_TASKS), variations=a.sw_model_variations, max_instances=a.pool,
                             max_steps=a.steps) as env:
            critic = make_critic("self-eval", backend, env)
            for algo in ("greedy", "mcts"):
                rows.append(run(env, env.tasks, backend, algo, a, critic))
                print(f"scienceworld model {algo}: {rows[-1]['solved']}/{rows[-1]['tasks']} in "
                      f"{rows[-1]['seconds']} s", flush=True)
    finally:
        backend.close()
    return rows


def throughput_part(a: argparse.Namespace, run: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    from mcts_agent.envs.text.scienceworld import ScienceWorldEnv
    from mcts_agent.envs.text.scienceworld_jvm import Simulator
    from mcts_agent.llm.scripted import ScriptedBackend

    rows = []
    with Simulator() as sim:
        gold = sim.gold_actions(BRANCH_KEY)
        for method in ("fast step (no valid actions)", "package ScienceWorldEnv.step"):
            sim.reset(BRANCH_KEY)
            t0 = time.perf_counter()
            for act in gold:
                sim.step(act) if method.startswith("fast") else sim.env.step(act)
            seconds = time.perf_counter() - t0
            rows.append({"setting": method, "jvms": 1, "env_steps": len(gold), "seconds": round(seconds, 2),
                         "steps_per_s": round(len(gold) / seconds, 1)})
    for k in (1, 2, 4):
        with ScienceWorldEnv(task=["find-living-thing", "find-plant"], variations=2, max_instances=k,
                             max_steps=8) as env:
            r = run(env, env.tasks, ScriptedBackend(exploring_script(env, env.tasks)), "mcts", scripted(a),
                    simulations=6, branching=2, workers=k)
            st = env.pool.stats
            rows.append({"setting": "MCTS, scripted policy, 4 trees", "jvms": k, "env_steps": r["env_steps"],
                         "seconds": r["seconds"], "steps_per_s": round(r["env_steps"] / max(r["seconds"], 1e-9), 2),
                         "resets": st.resets, "replayed": st.replayed, "mismatches": st.mismatches})
    return rows


def branch_part(a: argparse.Namespace) -> list[dict[str, Any]]:
    from mcts_agent.envs.text.scienceworld_jvm import Simulator, fingerprint
    from mcts_agent.benchmarks.web_agents import pool_hit_row
    from mcts_agent.replay import ReplayPool

    with Simulator() as sim:
        gold = sim.gold_actions(BRANCH_KEY)
    other = (BRANCH_KEY[0], BRANCH_KEY[1] + 1)
    rows = []
    for depth in a.depths:
        prefix, branch = tuple(gold[:depth]), "look around"
        times = []
        for _ in range(a.fresh_repeats):  # a new JVM: start, load, reset, replay, step
            t0 = time.perf_counter()
            with Simulator() as fresh:
                fresh.reset(BRANCH_KEY)
                for act in prefix:
                    fresh.step(act)
                fresh.step(branch)
                times.append(time.perf_counter() - t0)
        rows.append({"method": "new JVM + reset + replay", "depth": depth,
                     "seconds_per_branch": statistics.median(times), "replayed_per_branch": depth})
        with ReplayPool(Simulator, Simulator.reset, Simulator.step, capacity=1, close=Simulator.close,
                        fingerprint=fingerprint) as pool:
            pool.step(BRANCH_KEY, prefix, branch)  # warm: the JVM runs
            times, r0 = [], pool.stats.replayed
            for i in range(a.repeats):  # alternate two variations: every branch loads, resets and replays
                t0 = time.perf_counter()
                pool.step(BRANCH_KEY if i % 2 else other, prefix if i % 2 else (), branch)
                times.append(time.perf_counter() - t0)
            # only the odd ones replay the prefix; report those
            rows.append({"method": "reset + replay (live JVM)", "depth": depth,
                         "seconds_per_branch": statistics.median(times[1::2]),
                         "replayed_per_branch": (pool.stats.replayed - r0) / len(times[1::2])})
        with ReplayPool(Simulator, Simulator.reset, Simulator.step, capacity=2, close=Simulator.close,
                        fingerprint=fingerprint) as pool:
            rows.append(pool_hit_row(pool, BRANCH_KEY, prefix, lambda i: "look around" if i % 2 else "inventory",
                                     a.repeats, depth))
    for r in rows:
        r["seconds_per_branch"] = round(r["seconds_per_branch"], 4)
    return rows


def main(a: argparse.Namespace, run: Callable[..., dict[str, Any]], load: float) -> dict[str, Any]:
    """Run the four parts; print their tables; the JSON fields for ``write_result``."""
    from mcts_agent.benchmarks.common import print_table

    oracle = oracle_part(a, run)
    model = [] if a.skip_model else model_part(a, run)
    throughput = throughput_part(a, run)
    branch = branch_part(a)
    total = {"tasks": sum(r["tasks"] for r in oracle), "solved": sum(r["solved"] for r in oracle)}
    print_table(f"ScienceWorld gold paths through the planner: {total['solved']}/{total['tasks']} (load {load:.2f})",
                oracle, ["task", "tasks", "solved", "success", "env_steps", "seconds"])
    if model:
        print_table("ScienceWorld, embedded model (SmolLM2-135M): greedy vs MCTS", model,
                    ["algo", "tasks", "solved", "success", "ci95", "tokens_per_task", "env_steps", "seconds"])
    print_table("ScienceWorld env steps per second", throughput,
                ["setting", "jvms", "env_steps", "seconds", "steps_per_s", "resets", "replayed", "mismatches"])
    print_table("ScienceWorld seconds per branch", branch, ["method", "depth", "seconds_per_branch",
                                                            "replayed_per_branch"])
    return {"sw_model": model, "sw_oracle": oracle, "sw_oracle_total": total, "sw_throughput": throughput,
            "sw_branching": branch, "sw_oracle_tasks": list(ORACLE_TASKS), "sw_model_tasks": list(MODEL_TASKS)}

"""Web agents on MiniWoB++ in real headless chromium: oracle, greedy vs MCTS, env throughput, branching cost.

Four parts, all in this one run (each on fixed tasks x seeds of the miniwob wheel):

1. **Oracle**: the hand-written scripted agents (``envs.web.oracle``) through the real planner on
   every featured task; the task's own reward judges them. Anything below 100% is a harness bug.
2. **Embedded model** (SmolLM2-135M): greedy and MCTS (self-eval critic; evaluation mode, no
   reward reaches search) on a subset: success with 95% Wilson intervals, tokens per task.
3. **Env steps per second** with a pool of 1, 2 and 4 browsers (env workers = pool size): MCTS
   with a scripted policy (the oracle plus one other click per node) over 8 trees, so steps
   include the replays branching costs.
4. **Seconds per branch** at depth d: a new browser + reset + replay, a reset + replay in a live
   browser (the pool holds no instance at the parent), and a pool hit (the child of the node
   just expanded continues in its browser).

    python -m mcts_agent.benchmarks.web_agents --seeds 5 --model-seeds 3 --out results/web_agents.json

``--suite scienceworld`` runs the same four parts on ScienceWorld (its JVM simulator, branched by
replay; ``benchmarks.web_agents_scienceworld``), ``--suite all`` both:

    OMP_NUM_THREADS=1 python -m mcts_agent.benchmarks.web_agents --suite scienceworld \
        --out results/web_agents_scienceworld.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable, Sequence

from mcts_agent.benchmarks.common import print_table, write_result
from mcts_agent.env import Task
from mcts_agent.runner import wilson_interval

MODEL_TASKS = ("click-button", "click-link", "enter-text", "login-user", "choose-list", "click-dialog")


def run(env: Any, tasks: Sequence[Task], backend: Any, algo: str, a: argparse.Namespace, critic: Any = None,
        simulations: int | None = None, branching: int | None = None, workers: int | None = None) -> dict[str, Any]:
    from mcts_agent.search import Planner, SearchConfig

    cfg = SearchConfig(algo=algo, simulations=simulations or a.simulations, branching=branching or a.branching,
                       max_step_tokens=a.max_step_tokens, temperature=0.8, seed=a.seed,
                       env_workers=workers or a.pool, max_trees_in_flight=len(tasks))
    planner = Planner(backend, env, cfg, critic if algo == "mcts" else None)
    t0 = time.perf_counter()
    trees = planner.run(tasks)
    seconds = time.perf_counter() - t0
    ok = [t.answer_node is not None and env.verify_state(t.nodes[t.answer_node].state, task)
          for t, task in zip(trees, tasks)]
    lo, hi = wilson_interval(sum(ok), len(ok))
    return {"algo": algo, "tasks": len(tasks), "solved": sum(ok), "success": sum(ok) / len(ok),
            "ci95": [round(lo, 3), round(hi, 3)], "seconds": round(seconds, 1),
            "env_steps": sum(len(t.nodes) - 1 for t in trees),
            "tokens_per_task": round(planner.stats.generated_tokens / len(tasks), 1)}


def oracle_part(a: argparse.Namespace) -> list[dict[str, Any]]:
    from mcts_agent.envs.web.miniwob import FEATURED, MiniWoBEnv
    from mcts_agent.envs.web.oracle import oracle_script
    from mcts_agent.llm.scripted import ScriptedBackend

    rows = []
    with MiniWoBEnv(task=list(FEATURED), seeds=a.seeds, pool_size=a.pool, max_steps=12) as env:
        for name in FEATURED:
            tasks = [t for t in env.tasks if t.meta["task"] == name]
            r = run(env, tasks, ScriptedBackend(oracle_script(tasks)), "greedy", a)
            rows.append({"task": name, **{k: r[k] for k in ("tasks", "solved", "success", "env_steps", "seconds")}})
    return rows


def model_part(a: argparse.Namespace) -> list[dict[str, Any]]:
    from mcts_agent.critics import make_critic
    from mcts_agent.envs.web.miniwob import MiniWoBEnv
    from mcts_agent.llm import load_backend

    backend = load_backend("transformers", seed=a.seed)
    rows = []
    try:
        with MiniWoBEnv(task=list(MODEL_TASKS), seeds=a.model_seeds, pool_size=a.pool, max_steps=a.steps) as env:
            critic = make_critic("self-eval", backend, env)
            for algo in ("greedy", "mcts"):
                rows.append(run(env, env.tasks, backend, algo, a, critic))
                print(f"model {algo}: {rows[-1]['solved']}/{rows[-1]['tasks']} in {rows[-1]['seconds']} s", flush=True)
    finally:
        backend.close()
    return rows


def throughput_part(a: argparse.Namespace) -> list[dict[str, Any]]:
    from mcts_agent.envs.web.miniwob import MiniWoBEnv
    from mcts_agent.envs.web.oracle import exploring_script
    from mcts_agent.llm.scripted import ScriptedBackend

    rows = []
    for k in (1, 2, 4):
        with MiniWoBEnv(task=["login-user", "click-checkboxes"], seeds=4, pool_size=k, max_steps=6) as env:
            r = run(env, env.tasks, ScriptedBackend(exploring_script(env.tasks)), "mcts", a, simulations=6,
                    branching=2, workers=k)
            st = env.pool.stats
            rows.append({"browsers": k, "env_steps": r["env_steps"], "seconds": r["seconds"],
                         "steps_per_s": round(r["env_steps"] / max(r["seconds"], 1e-9), 2),
                         "resets": st.resets, "replayed": st.replayed, "mismatches": st.mismatches})
    base = rows[0]["steps_per_s"]
    for r in rows:
        r["speedup"] = round(r["steps_per_s"] / base, 2)
    return rows


def branch_part(a: argparse.Namespace) -> list[dict[str, Any]]:
    from mcts_agent.envs.web.miniwob import MiniWoBEnv
    from mcts_agent.envs.web.page import MiniWoBPage, fingerprint
    from mcts_agent.replay import ReplayPool

    rows = []
    with MiniWoBEnv(task="login-user", seeds=1) as env:  # serves the pages; its pool stays unused
        url = env._base_url()
        key, other = ("login-user", 0), ("login-user", 1)

        def make() -> MiniWoBPage:
            return MiniWoBPage(url)

        for depth in a.depths:
            prefix = tuple(f'type({2 + 2 * (i % 2)}, "text {i}")' for i in range(depth))
            branch = 'type(2, "branch")'
            times = []
            for _ in range(a.fresh_repeats):  # a new browser: start, load, reset, replay, step
                t0 = time.perf_counter()
                page = make()
                page.reset(key)
                for act in prefix:
                    page.step(act)
                page.step(branch)
                times.append(time.perf_counter() - t0)
                page.close()
            rows.append({"method": "new browser + replay", "depth": depth, "seconds_per_branch": statistics.median(times),
                         "replayed_per_branch": depth})
            with ReplayPool(make, MiniWoBPage.reset, MiniWoBPage.step, capacity=1, close=MiniWoBPage.close,
                            fingerprint=fingerprint) as pool:
                pool.step(key, prefix, branch)  # warm: the browser exists, the page is loaded
                times, r0 = [], pool.stats.replayed
                for i in range(a.repeats):  # alternate two seeds: every branch resets and replays
                    t0 = time.perf_counter()
                    pool.step(other if i % 2 else key, prefix, branch)
                    times.append(time.perf_counter() - t0)
                rows.append({"method": "reset + replay (live browser)", "depth": depth,
                             "seconds_per_branch": statistics.median(times),
                             "replayed_per_branch": (pool.stats.replayed - r0) / a.repeats})
            with ReplayPool(make, MiniWoBPage.reset, MiniWoBPage.step, capacity=2, close=MiniWoBPage.close,
                            fingerprint=fingerprint) as pool:
                rows.append(pool_hit_row(pool, key, prefix, lambda i: f'type(2, "child {i}")', a.repeats, depth))
    for r in rows:
        r["seconds_per_branch"] = round(r["seconds_per_branch"], 4)
    return rows


def pool_hit_row(pool: Any, key: Any, prefix: tuple[str, ...], child: Callable[[int], str], repeats: int,
                 depth: int) -> dict[str, Any]:
    """Seconds per branch when each branch is a child of the node just expanded, so the pool
    continues in its parent's instance: ``child(i)`` is the i-th branch's action."""
    history = tuple(prefix)
    pool.step(key, history[:-1], history[-1]) if history else pool.start(key)
    times, r0 = [], pool.stats.replayed
    for i in range(repeats):
        act = child(i)
        t0 = time.perf_counter()
        pool.step(key, history, act)
        times.append(time.perf_counter() - t0)
        history += (act,)
    return {"method": "pool hit (child continues)", "depth": depth, "seconds_per_branch": statistics.median(times),
            "replayed_per_branch": (pool.stats.replayed - r0) / repeats}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds per featured task for the oracle")
    p.add_argument("--model-seeds", type=int, default=3, help="seeds per task of MODEL_TASKS for the model")
    p.add_argument("--simulations", type=int, default=6)
    p.add_argument("--branching", type=int, default=3)
    p.add_argument("--max-step-tokens", type=int, default=40, help="an action is one short line")
    p.add_argument("--steps", type=int, default=6, help="action budget of a model episode")
    p.add_argument("--pool", type=int, default=4, help="live browsers (and env workers) for parts 1 and 2")
    p.add_argument("--depths", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--fresh-repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-model", action="store_true", help="oracle, throughput and branching parts only")
    p.add_argument("--suite", choices=("miniwob", "scienceworld", "all"), default="miniwob")
    p.add_argument("--sw-variations", type=int, default=1, help="test variations per ScienceWorld task, oracle")
    p.add_argument("--sw-model-variations", type=int, default=1, help="test variations per task, model")
    p.add_argument("--out", default="results/web_agents.json")
    a = p.parse_args(argv)
    load = os.getloadavg()[0]
    extra: dict[str, Any] = {"load_average": load}
    if a.suite != "scienceworld":
        extra.update(miniwob_suite(a, load))
    if a.suite != "miniwob":
        from mcts_agent.benchmarks import web_agents_scienceworld

        extra.update(web_agents_scienceworld.main(a, run, load))
    return write_result(a.out, "web_agents", vars(a), extra.pop("model", []), **extra)


def miniwob_suite(a: argparse.Namespace, load: float) -> dict[str, Any]:
    """The MiniWoB++ parts; their tables printed, their JSON fields returned."""
    oracle = oracle_part(a)
    model = [] if a.skip_model else model_part(a)
    throughput = throughput_part(a)
    branch = branch_part(a)
    total = {"tasks": sum(r["tasks"] for r in oracle), "solved": sum(r["solved"] for r in oracle)}
    print_table(f"scripted oracle through the planner: {total['solved']}/{total['tasks']} (load {load:.2f})", oracle,
                ["task", "tasks", "solved", "success", "env_steps", "seconds"])
    if model:
        print_table("embedded model (SmolLM2-135M): greedy vs MCTS", model,
                    ["algo", "tasks", "solved", "success", "ci95", "tokens_per_task", "env_steps", "seconds"])
    print_table("env steps per second (MCTS, scripted policy, 8 trees)", throughput,
                ["browsers", "env_steps", "seconds", "steps_per_s", "speedup", "resets", "replayed", "mismatches"])
    print_table("seconds per branch", branch, ["method", "depth", "seconds_per_branch", "replayed_per_branch"])
    return {"model": model, "oracle": oracle, "oracle_total": total, "throughput": throughput, "branching": branch,
            "model_tasks": list(MODEL_TASKS)}


if __name__ == "__main__":
    main()

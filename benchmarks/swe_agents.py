"""SWE agents: generator yield, the oracle through the harness, greedy vs MCTS, SWE-bench agreement, sandbox cost.

Five parts, all in this one run:

1. **Generator yield** (``swe generate``) on each project: instances kept per site tried,
   why the others were dropped, seconds per instance.
2. **Oracle** (a scripted agent applying the gold patch through the env's own actions)
   through the real planner on the shipped set: proves the harness; below 100% is a bug.
3. **Model**: greedy, MCTS with the self-eval critic, and the SWE-Search recipe (value agent +
   discriminator) on the shipped set: resolve rate with 95% Wilson intervals (the embedded
   135M model: expect about zero). ``--backend openai --base-url URL --model NAME`` runs the
   same on a bigger model behind an OpenAI-compatible server.
4. **Agreement**: our verdicts against SWE-bench's own grader on five patches per instance
   (gold, empty, another instance's fix, a breaking change, one that does not apply).
5. **Sandbox cost**: one test-file run in the sandbox against the same pytest run bare
   (same venv, same files), interleaved; the ratio of medians.

    python -m mcts_agent.benchmarks.swe_agents --candidates 30 --tasks 10 --out results/swe_agents.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from typing import Any, Sequence

from mcts_agent.benchmarks.common import print_table, write_result
from mcts_agent.env import Task
from mcts_agent.runner import wilson_interval


def _rate(ok: Sequence[bool]) -> dict[str, Any]:
    lo, hi = wilson_interval(sum(ok), len(ok))
    return {"tasks": len(ok), "resolved": sum(ok), "rate": sum(ok) / len(ok) if ok else 0.0,
            "ci95": [round(lo, 3), round(hi, 3)]}


def generator_rows(candidates: int, seed: int) -> list[dict[str, Any]]:
    from mcts_agent.envs.swe.config import GenerateConfig, PROJECT_NAMES
    from mcts_agent.envs.swe.generate import generate

    rows = []
    with tempfile.TemporaryDirectory(prefix="swe-bench-gen-") as tmp:
        for name in PROJECT_NAMES:
            cfg = GenerateConfig(project=name, out=f"{tmp}/{name}.jsonl", repos_dir=f"{tmp}/repos",
                                 max_instances=candidates, max_candidates=candidates, seed=seed)
            rows.append({"project": name, **generate(cfg).to_dict()})
    return rows


def model_rows(env: Any, tasks: list[Task], backend: Any, a: argparse.Namespace) -> list[dict[str, Any]]:
    from mcts_agent.critics import make_critic
    from mcts_agent.envs.swe.recipe import swe_search
    from mcts_agent.search import SearchConfig, run_search

    rows = []
    for algo in ("greedy", "mcts", "swe-search"):
        cfg = SearchConfig(algo="greedy" if algo == "greedy" else "mcts", simulations=a.simulations,
                           branching=a.branching, max_step_tokens=a.max_step_tokens, temperature=0.8, seed=a.seed,
                           env_workers=2, max_trees_in_flight=len(tasks))
        t0 = time.perf_counter()
        if algo == "swe-search":
            trees, patches = swe_search(tasks, env, backend, cfg)
        else:
            critic = make_critic("self-eval", backend, env) if algo == "mcts" else None
            trees = run_search(tasks, env, backend, cfg, critic)
            patches = [(t.nodes[t.answer_node].state.payload or {}).get("patch", "") if t.answer_node is not None
                       else "" for t in trees]
        ok = [env.grade(task, p).resolved for task, p in zip(tasks, patches)]
        tokens = sum(int(t.stats.get("generated_tokens", 0)) for t in trees)
        invalid = sum(1 for t in trees for n in t.nodes[1:] if n.state is not None and n.state.turns
                      and (n.state.turns[-1].observation or "").startswith("error:"))
        cut = sum(1 for t in trees for n in t.nodes[1:] if str(getattr(n, "finish_reason", "")) == "length")
        actions = sum(1 for t in trees for n in t.nodes[1:])
        rows.append({"algo": algo, **_rate(ok), "tokens_per_task": tokens / len(tasks), "actions": actions,
                     "error_observations": invalid, "cut_by_length": cut,
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{algo}: {sum(ok)}/{len(ok)}", flush=True)
    return rows


def agreement(env: Any) -> dict[str, Any]:
    from mcts_agent.envs.swe.env import task_instance
    from mcts_agent.envs.swe.official import official_report

    tasks = env.tasks
    runs = 0
    agree = 0
    kinds: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        gold = json.loads(task.answer)["patch"]
        other = json.loads(tasks[(i + 1) % len(tasks)].answer)["patch"]
        breaking = ("diff --git a/conftest.py b/conftest.py\nnew file mode 100644\n--- /dev/null\n+++ b/conftest.py\n"
                    "@@ -0,0 +1 @@\n+raise ImportError('broken on purpose')\n")
        bad = "diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-x\n+y\n"
        for kind, patch in (("gold", gold), ("empty", ""), ("other", other), ("breaking", breaking), ("unappliable", bad)):
            ours = env.grade(task, patch)
            theirs = official_report(task_instance(task), patch, ours)
            runs += 1
            same = ours.resolved == theirs["resolved"]
            agree += same
            k = kinds.setdefault(kind, [0, 0, 0])
            k[0] += 1
            k[1] += same
            k[2] += ours.resolved
    return {"runs": runs, "agree": agree, "by_kind": {k: {"runs": v[0], "agree": v[1], "resolved": v[2]}
                                                      for k, v in kinds.items()}}


def sandbox_cost(env: Any, task: Task, repeats: int) -> dict[str, Any]:
    from mcts_agent.envs.swe.testrun import python_path

    runner = env.runner(task)
    ws = env.workspace(task)
    sandboxed, bare = [], []
    with ws.checkout("") as copy:
        files = sorted(os.path.relpath(os.path.join(d, f), copy) for d, _, fs in os.walk(os.path.join(copy, "tests"))
                       for f in fs if f.startswith("test_") and f.endswith(".py"))[:1]
        cmd = [f"{runner.venv}/bin/python", "-B", "-m", "pytest", "-rA", "-p", "no:cacheprovider", *files]
        envvars = {"PATH": "/usr/bin:/bin", "PYTHONPATH": python_path(copy, copy), "PYTHONDONTWRITEBYTECODE": "1"}
        for _ in range(repeats):
            t0 = time.perf_counter()
            run = runner.run(copy, files)
            sandboxed.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=copy, env=envvars, capture_output=True, text=True)
            bare.append(time.perf_counter() - t0)
            assert proc.returncode == 0 and run.returncode == 0, (proc.stdout[-500:], run.log[-500:])
        ws.settle(copy, "")
    s, b = statistics.median(sandboxed), statistics.median(bare)
    return {"file": files[0], "tests": len(run.statuses), "repeats": repeats, "sandboxed_s": round(s, 3),
            "bare_s": round(b, 3), "ratio": round(s / b, 2), "overhead_s": round(s - b, 3)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", type=int, default=30, help="mutation sites tried per project")
    p.add_argument("--tasks", type=int, default=10, help="shipped instances for the oracle and the model")
    p.add_argument("--simulations", type=int, default=6)
    p.add_argument("--branching", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=6, help="action budget of a model episode")
    p.add_argument("--max-step-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=10, help="runs per side of the sandbox-cost comparison")
    p.add_argument("--backend", default="transformers", help="transformers | vllm | openai")
    p.add_argument("--model", default=None)
    p.add_argument("--base-url", default=None)
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/swe_agents.json")
    a = p.parse_args(argv)
    load = os.getloadavg()[0]

    from mcts_agent import envs
    from mcts_agent.envs.swe.oracle import oracle_script
    from mcts_agent.llm.scripted import ScriptedBackend
    from mcts_agent.llm.spec import BackendSpec
    from mcts_agent.search import SearchConfig, run_search

    gen = generator_rows(a.candidates, a.seed)
    tasks = envs.load_tasks("swe/bench", limit=a.tasks)
    env = envs.make("swe/bench", tasks=envs.load_tasks("swe/bench"))
    model: list[dict[str, Any]] = []
    try:
        cfg = SearchConfig(algo="greedy", max_step_tokens=100_000, max_trees_in_flight=len(tasks), env_workers=2)
        t0 = time.perf_counter()
        trees = run_search(tasks, env, ScriptedBackend(oracle_script(tasks)), cfg)
        ok = [env.grade(task, tree.nodes[tree.answer_node].state.payload["patch"]).resolved
              for task, tree in zip(tasks, trees)]
        oracle = {**_rate(ok), "seconds": round(time.perf_counter() - t0, 2)}
        agree = agreement(env)
        cost = sandbox_cost(env, tasks[0], a.repeats)
        if not a.skip_model:
            menv = envs.make("swe/bench", tasks=tasks, max_steps=a.max_steps)
            backend = BackendSpec(backend=a.backend, model=a.model, base_url=a.base_url).load(seed=a.seed)
            try:
                model = model_rows(menv, tasks, backend, a)
            finally:
                backend.close()
                menv.close()
    finally:
        env.close()
    print_table(f"generator yield (load {load:.2f})", gen,
                ["project", "tried", "instances", "yield", "dropped", "seconds_per_instance", "baseline_passing"])
    print_table("scripted oracle (gold patch through the env's actions)", [oracle], ["tasks", "resolved", "rate", "seconds"])
    print_table(f"our verdicts vs SWE-bench's grader: {agree['agree']}/{agree['runs']} agree",
                [{"kind": k, **v} for k, v in agree["by_kind"].items()], ["kind", "runs", "agree", "resolved"])
    print_table("sandboxed pytest vs bare pytest (median seconds)", [cost],
                ["file", "tests", "repeats", "sandboxed_s", "bare_s", "ratio", "overhead_s"])
    if model:
        print_table(f"{a.backend} model {a.model or '(embedded SmolLM2-135M)'}: resolve rate", model,
                    ["algo", "tasks", "resolved", "rate", "ci95", "tokens_per_task", "actions", "error_observations",
                     "cut_by_length", "seconds"])
    return write_result(a.out, "swe_agents", vars(a), model, generator=gen, oracle=oracle, agreement=agree,
                        sandbox_cost=cost, load_average=load)


if __name__ == "__main__":
    main()

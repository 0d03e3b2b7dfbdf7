"""Agent environments: greedy against MCTS on BFCL and TextCraft, our BFCL verdicts against BFCL's own.

Four parts, all in this one run:

1. **Oracle** (scripted backend writing the gold calls / a TextCraft plan) through the real
   planner: proves the harness; anything below 100% is a harness bug.
2. **Embedded model**: greedy and MCTS (self-eval critic; evaluation mode, no gold reaches
   search) on a fixed subset per BFCL category and of TextCraft's test split: accuracy with
   95% Wilson intervals and generated tokens per task.
3. **Agreement**: every reply the model wrote in its single-turn BFCL trees (finished or cut
   by the token cap) and every finished multi-turn episode, judged by our verdicts and by
   BFCL's own ``evaluate_task``; target 100%.
4. **Slow env steps**: round wall time with k env workers against one
   (``mcts_agent.benchmarks.env_parallelism``).

    python -m mcts_agent.benchmarks.agent_envs --single 8 --multi 3 --textcraft 10 --out results/agent_envs.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Sequence

from mcts_agent.benchmarks import env_parallelism
from mcts_agent.benchmarks.common import print_table, write_result
from mcts_agent.env import Task
from mcts_agent.io import save_trees
from mcts_agent.runner import wilson_interval
from mcts_agent.tree import Tree

SINGLE = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance", "live_simple")
MULTI = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param")
ORACLE_TOKENS = 4000  # the scripted backend counts characters as tokens; gold replies can be long
ORACLE_STEPS = 60  # action budget of the oracle runs (the longest TextCraft plan is 48 actions)


def solved(env: Any, trees: Sequence[Tree], tasks: Sequence[Task]) -> list[bool]:
    return [t.answer_node is not None and bool(env.verify_state(t.nodes[t.answer_node].state, task))
            for t, task in zip(trees, tasks)]


def search(env: Any, tasks: Sequence[Task], backend: Any, algo: str, args: argparse.Namespace,
           critic: Any = None, step_tokens: int | None = None) -> tuple[list[Tree], dict[str, Any]]:
    from mcts_agent.search import Planner, SearchConfig

    cfg = SearchConfig(algo=algo, simulations=args.simulations, branching=args.branching,
                       max_step_tokens=step_tokens or args.max_step_tokens, temperature=0.8, seed=args.seed,
                       env_workers=args.env_workers, max_trees_in_flight=len(tasks))
    planner = Planner(backend, env, cfg, critic if algo == "mcts" else None)
    t0 = time.perf_counter()
    trees = planner.run(tasks)
    ok = solved(env, trees, tasks)
    lo, hi = wilson_interval(sum(ok), len(ok))
    return trees, {"algo": algo, "tasks": len(tasks), "correct": sum(ok), "accuracy": sum(ok) / len(ok),
                   "ci95": [round(lo, 3), round(hi, 3)], "seconds": round(time.perf_counter() - t0, 1),
                   "tokens_per_task": planner.stats.generated_tokens / len(tasks)}


def outputs_of(category: str, trees: Sequence[Tree], tasks: Sequence[Task]) -> list[tuple[str, Any, bool]]:
    """(task id, raw output in BFCL's result format, our verdict) for every model output in the trees.

    Single-turn: every reply the model wrote (each node's action, finished or cut), judged by our
    verdict function. Multi-turn: every finished episode (terminal node), judged by ``verify_state``.
    """
    from mcts_agent.envs.tool.bfcl_calls import single_turn_verdict
    from mcts_agent.envs.tool.bfcl_multi import bfcl_result

    by_id = {t.id: t for t in tasks}
    env = None
    out = []
    for tree in trees:
        task = by_id[tree.task_id]
        if category in SINGLE:
            out.extend((task.id, n.action, single_turn_verdict(task, n.action)[0]) for n in tree.nodes[1:])
            continue
        if env is None:
            from mcts_agent import envs

            env = envs.make(f"tool/bfcl-{category}")
        out.extend((task.id, bfcl_result(n.state), bool(env.verify_state(n.state, task))) for n in tree.terminals())
    return out


def agreement(category: str, trees: Sequence[Tree], tasks: Sequence[Task]) -> dict[str, Any]:
    """Our verdict on every model output against BFCL's own evaluation (one result file per round)."""
    from mcts_agent.envs.tool.bfcl_official import official_verdicts

    rows = outputs_of(category, trees, tasks)
    rounds: list[dict[str, tuple[Any, bool]]] = []
    for tid, raw, mine in rows:  # BFCL scores one output per id per file
        free = next((r for r in rounds if tid not in r), None)
        if free is None:
            free = {}
            rounds.append(free)
        free[tid] = (raw, mine)
    agree = ours_true = 0
    disagreements = []
    for batch in rounds:
        official = official_verdicts(category, {tid: raw for tid, (raw, _) in batch.items()}, on_unsafe="false")
        for tid, (raw, mine) in batch.items():
            ours_true += mine
            if mine == official[tid]:
                agree += 1
            else:
                disagreements.append({"id": tid, "raw": raw, "ours": mine, "bfcl": official[tid]})
    return {"category": category, "outputs": len(rows), "agree": agree, "ours_correct": ours_true,
            "disagreements": disagreements[:5]}


def run_env(name: str, env: Any, tasks: list[Task], backend: Any, args: argparse.Namespace,
            model_rows: list, agree_rows: list, category: str = "") -> None:
    """Greedy and MCTS with the model on one env; BFCL trees also go to the agreement check."""
    from mcts_agent.critics import make_critic

    critic = make_critic("self-eval", backend, env)
    for algo in ("greedy", "mcts"):
        trees, r = search(env, tasks, backend, algo, args, critic)
        model_rows.append({"env": name, **r})
        if args.trees:
            save_trees(Path(args.trees) / f"{name}_{algo}.jsonl", trees)
        if category:
            agree_rows.append({**agreement(category, trees, tasks), "algo": algo})
        print(f"{name} {algo}: {r['correct']}/{r['tasks']} in {r['seconds']} s", flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--single", type=int, default=8, help="tasks per single-turn BFCL category")
    p.add_argument("--multi", type=int, default=3, help="tasks per multi-turn BFCL category")
    p.add_argument("--textcraft", type=int, default=10, help="TextCraft test-split tasks")
    p.add_argument("--simulations", type=int, default=6)
    p.add_argument("--branching", type=int, default=3)
    p.add_argument("--max-step-tokens", type=int, default=96)
    p.add_argument("--multi-steps", type=int, default=8, help="action budget of a multi-turn BFCL episode")
    p.add_argument("--textcraft-steps", type=int, default=12, help="action budget of a TextCraft episode")
    p.add_argument("--env-workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-model", action="store_true", help="oracle, agreement-free and parallelism parts only")
    p.add_argument("--trees", default="results/agent_envs_runs", help="folder for the model's trees ('' = none)")
    p.add_argument("--out", default="results/agent_envs.json")
    a = p.parse_args(argv)
    load = os.getloadavg()[0]

    from mcts_agent import envs
    from mcts_agent.envs.text.textcraft import oracle_script as textcraft_oracle
    from mcts_agent.envs.tool.bfcl_official import oracle_script
    from mcts_agent.llm import load_backend
    from mcts_agent.llm.scripted import ScriptedBackend

    backend = None if a.skip_model else load_backend("transformers", seed=a.seed)
    model_rows: list[dict[str, Any]] = []
    oracle_rows: list[dict[str, Any]] = []
    agree_rows: list[dict[str, Any]] = []
    try:
        for cat in SINGLE + MULTI:
            n, steps = (a.single, 3) if cat in SINGLE else (a.multi, a.multi_steps)
            tasks = envs.load_tasks(f"tool/bfcl-{cat}", limit=n)
            env = envs.make(f"tool/bfcl-{cat}", max_steps=steps)
            roomy = envs.make(f"tool/bfcl-{cat}", max_steps=ORACLE_STEPS)  # the oracle's plan always fits
            oracle_rows.append({"env": f"bfcl-{cat}", **search(roomy, tasks, ScriptedBackend(oracle_script(tasks)),
                                                               "greedy", a, step_tokens=ORACLE_TOKENS)[1]})
            if backend is not None:
                run_env(f"bfcl-{cat}", env, tasks, backend, a, model_rows, agree_rows, category=cat)
        tasks = envs.load_tasks("textcraft", split="test", limit=a.textcraft, seed=a.seed)
        roomy = envs.make("textcraft", max_steps=ORACLE_STEPS)
        oracle_rows.append({"env": "textcraft", **search(roomy, tasks, ScriptedBackend(textcraft_oracle(tasks)),
                                                         "greedy", a, step_tokens=ORACLE_TOKENS)[1]})
        if backend is not None:
            run_env("textcraft", envs.make("textcraft", max_steps=a.textcraft_steps), tasks, backend, a, model_rows, [])
    finally:
        if backend is not None:
            backend.close()
    par = env_parallelism.run([1, 2, 4, 8], delay=0.05, trees=16, branching=2, simulations=3)
    total = sum(r["outputs"] for r in agree_rows)
    agreed = sum(r["agree"] for r in agree_rows)
    print_table(f"scripted oracle through the planner (load {load:.2f})", oracle_rows,
                ["env", "tasks", "correct", "accuracy"])
    if model_rows:
        print_table("embedded model (SmolLM2-135M): greedy vs MCTS", model_rows,
                    ["env", "algo", "tasks", "accuracy", "ci95", "tokens_per_task", "seconds"])
        print_table(f"our BFCL verdicts vs BFCL's evaluate_task: {agreed}/{total} agree", agree_rows,
                    ["category", "algo", "outputs", "agree", "ours_correct"])
    print_table("slow env (0.05 s/step): round time with k workers", par,
                ["workers", "round_seconds", "speedup", "target", "meets_target"])
    return write_result(a.out, "agent_envs", vars(a), model_rows, oracle=oracle_rows, agreement=agree_rows,
                        agreement_total={"outputs": total, "agree": agreed}, parallelism=par, load_average=load)


if __name__ == "__main__":
    main()

"""Equal compute: accuracy of greedy, best-of-N, self-consistency, beam and MCTS against
generated tokens per task, on a reasoning-gym arithmetic task with the embedded model.

Each method runs at several budgets (samples for best-of-N / self-consistency, a token
budget per tree for beam and MCTS), all on the same tasks, in one run. The plot puts
accuracy against the tokens each method actually spent.

    python -m mcts_agent.benchmarks.equal_compute --tasks 40 --budgets 150,300,600
    python -m mcts_agent.benchmarks.equal_compute --tasks 60 --budgets 300 --methods sc,mcts \
        --critic prm:results/critic_quality_runs/prm/critic     # MCTS steered by a trained PRM

Every method is also compared with self-consistency at the same budget on the same tasks:
the paired difference in accuracy with a paired-bootstrap 95% interval.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mcts_agent.benchmarks.common import paired_bootstrap, print_table, write_result

METHODS = ("bon", "sc", "beam", "mcts")


def configs(budget: int, solution_tokens: int, args: argparse.Namespace) -> dict[str, dict]:
    """Search settings that spend about ``budget`` generated tokens per task."""
    n = max(1, round(budget / solution_tokens))
    common = {"max_step_tokens": args.max_step_tokens, "max_solution_tokens": args.max_solution_tokens,
              "seed": args.seed, "temperature": args.temperature, "max_trees_in_flight": args.tasks}
    return {
        "bon": {**common, "algo": "bon", "samples": n},
        "sc": {**common, "algo": "sc", "samples": n},
        "beam": {**common, "algo": "beam", "beam_width": 2, "branching": 3, "token_budget": budget},
        "mcts": {**common, "algo": "mcts", "simulations": 10_000, "branching": args.branching,
                 "widening": args.widening, "token_budget": budget},
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="math/reasoning-gym")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--budgets", default="150,300,600", help="generated tokens per task")
    p.add_argument("--branching", type=int, default=3)
    p.add_argument("--widening", type=float, default=2.0, help="MCTS progressive widening constant (0 = off)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--max-step-tokens", type=int, default=48)
    p.add_argument("--max-solution-tokens", type=int, default=160)
    p.add_argument("--critic", default="self-eval", help="critic of bon, beam and mcts (e.g. prm:DIR, value:DIR)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"some of {','.join(METHODS)} (greedy always runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="results/equal_compute_runs")
    p.add_argument("--out", default="results/equal_compute.json")
    p.add_argument("--plot", default="results/equal_compute.png")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or set(methods) - set(METHODS):
        p.error(f"--methods {args.methods!r}: expected a comma-separated subset of {list(METHODS)}")

    from mcts_agent import envs
    from mcts_agent.critics import make_critic
    from mcts_agent.llm import load_backend
    from mcts_agent.runner import run_tasks
    from mcts_agent.search import SearchConfig

    tasks = envs.load_tasks(args.env, limit=args.tasks, seed=args.seed)
    env = envs.make(args.env, max_steps=4)
    backend = load_backend("transformers")
    critic = make_critic(args.critic, backend, env)
    work = Path(args.workdir)
    rows = []

    def run(label: str, budget: int | None, cfg: dict) -> dict:
        sc = SearchConfig.from_dict(cfg)
        guided = label in ("bon", "beam", "mcts")
        s = run_tasks(tasks, env, backend, sc, work / f"{label}-{budget}", critic if guided else None, env_id=args.env,
                      settings={"critic": args.critic} if guided else None)  # a rerun with another critic is refused
        row = {"method": label, "budget": budget, "dir": str(work / f"{label}-{budget}"), "accuracy": s.accuracy,
               "ci95_low": s.ci95[0],
               "ci95_high": s.ci95[1], "tokens_per_task": round(s.tokens_per_task, 1), "seconds": s.seconds}
        rows.append(row)
        print(row, flush=True)
        return row

    base = {"max_solution_tokens": args.max_solution_tokens, "seed": args.seed, "max_trees_in_flight": args.tasks}
    greedy = run("greedy", None, {**base, "algo": "greedy"})
    solution_tokens = max(10, int(greedy["tokens_per_task"]))
    for budget in [int(b) for b in args.budgets.split(",")]:
        for label, cfg in configs(budget, solution_tokens, args).items():
            if label in methods:
                run(label, budget, cfg)
    backend.close()
    print_table("accuracy at equal generated tokens", [{k: v for k, v in r.items() if k != "dir"} for r in rows])
    against_sc = paired_against_sc(rows, args.seed)
    if against_sc:
        print_table("paired difference against self-consistency at the same budget", against_sc)
    plot(rows, args.plot)
    return write_result(args.out, "equal_compute", vars(args), rows, plot=args.plot, paired_vs_sc=against_sc)


def paired_against_sc(rows: list[dict], seed: int) -> list[dict]:
    """Each method's accuracy minus self-consistency's on the same tasks and budget, with a
    paired-bootstrap 95% interval."""
    import json

    def correct(folder: str) -> dict[str, bool]:
        lines = (Path(folder) / "results.jsonl").read_text().splitlines()
        return {r["task_id"]: bool(r["correct"]) for r in map(json.loads, filter(str.strip, lines))}

    out = []
    for sc in (r for r in rows if r["method"] == "sc"):
        base = correct(sc["dir"])
        for r in rows:
            if r["budget"] == sc["budget"] and r["method"] != "sc":
                mine = correct(r["dir"])
                diff, lo, hi = paired_bootstrap([int(mine[t]) - int(base[t]) for t in sorted(base)], seed=seed)
                out.append({"method": r["method"], "budget": r["budget"], "minus_sc_points": round(100 * diff, 1),
                            "ci95_points": [round(100 * lo, 1), round(100 * hi, 1)]})
    return out


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["tokens_per_task"], r["accuracy"]) for r in rows if r["method"] == method)
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=method)
    ax.set_xlabel("generated tokens per task")
    ax.set_ylabel("accuracy")
    ax.set_title("Equal compute (embedded SmolLM2-135M)")
    ax.grid(alpha=0.3)
    ax.legend()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

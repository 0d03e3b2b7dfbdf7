"""Self-improvement: iterative MCTS-DPO against the rejection-sampling SFT (STaR) baseline.

Both arms start from the embedded model, evaluate greedy accuracy on the same held-out
tasks after every iteration (95% Wilson intervals), and train on the same number of
examples per iteration (the SFT arm is capped at the DPO arm's pair count). Prints a
table, writes JSON and a PNG; phase wall times and generated tokens come from each
phase's DONE.json record. With ``--backend`` given twice, the whole comparison runs once per
backend (searches and evaluations on that backend, training always with TRL), and a table
puts each phase's wall time side by side.

    python -m mcts_agent.benchmarks.self_improve --iterations 2 --train-tasks 64 --eval-tasks 200
    python -m mcts_agent.benchmarks.self_improve --backend transformers --backend vllm --iterations 1
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from mcts_agent.benchmarks.common import paired_bootstrap, print_table, write_result


BACKEND_OPTIONS = {"transformers": {}, "vllm": {"max_model_len": 2048}}
PHASES = ("search", "pairs", "train", "eval")


def arm_config(args: argparse.Namespace, method: str, out_dir: Path, max_examples: int | None,
               backend: str = "transformers") -> dict[str, Any]:
    search = ({"algo": "mcts", "simulations": args.simulations, "branching": args.branching, "widening": args.widening,
               "temperature": args.temperature, "max_step_tokens": 48}
              if method == "dpo" else
              {"algo": "bon", "samples": args.samples, "temperature": args.temperature, "max_solution_tokens": 160})
    return {
        "out_dir": str(out_dir), "env": args.env, "train_tasks": args.train_tasks, "eval_tasks": args.eval_tasks,
        "train_seed": 101, "eval_seed": 202, "iterations": args.iterations, "max_steps": 4, "method": method,
        "max_examples": max_examples, "critic": "self-eval:0.5,verifier:0.5", "search": search,
        "eval_algos": ["greedy"], "eval_search": {"max_solution_tokens": 160},
        "pairs": {"q_margin": args.q_margin},
        "dpo": {"epochs": args.epochs, "batch_size": 8, "learning_rate": args.lr, "max_length": 384, "beta": 0.1,
                "sft_weight": args.sft_weight},
        "sft": {"epochs": args.epochs, "batch_size": 8, "learning_rate": args.lr, "max_length": 384},
        "seed": args.seed, "backend": {"backend": backend, "options": BACKEND_OPTIONS[backend]},
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="math/arithmetic")
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--train-tasks", type=int, default=64)
    p.add_argument("--eval-tasks", type=int, default=200)
    p.add_argument("--simulations", type=int, default=8)
    p.add_argument("--branching", type=int, default=4)
    p.add_argument("--widening", type=float, default=2.0, help="MCTS progressive widening constant (0 = off)")
    p.add_argument("--samples", type=int, default=8, help="SFT arm: solutions sampled per train task")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--q-margin", type=float, default=0.1)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--sft-weight", type=float, default=0.0, help="MCTS-DPO arm: weight of the NLL term on chosen steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="results/self_improve_runs")
    p.add_argument("--out", default="results/self_improve.json")
    p.add_argument("--plot", default="results/self_improve.png")
    p.add_argument("--backend", action="append", choices=sorted(BACKEND_OPTIONS),
                   help="Backend of the searches and evaluations; give it twice to compare phase times "
                        "(default: transformers)")
    args = p.parse_args(argv)
    backends = list(dict.fromkeys(args.backend or ["transformers"]))
    args.backend = backends

    rows: list[dict[str, Any]] = []
    verdicts: dict[str, Any] = {}
    for backend in backends:
        work = Path(args.workdir) / backend if len(backends) > 1 or backend != "transformers" else Path(args.workdir)
        backend_rows, verdicts[backend] = compare_arms(args, work, backend)
        rows += backend_rows
    print_table("held-out greedy accuracy per iteration", rows)
    phase_times = phase_table(rows, backends)
    print_table("wall seconds per phase", phase_times)
    plot(rows, args.plot)
    verdict = verdicts[backends[0]] if len(backends) == 1 else verdicts
    print(json.dumps(verdict))
    return write_result(args.out, "self_improve", vars(args), rows, verdict=verdict, phase_seconds=phase_times,
                        plot=args.plot)


def compare_arms(args: argparse.Namespace, work: Path, backend: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Both arms on one backend: their per-iteration rows and the verdict."""
    from mcts_agent.training.iterate import run_iterate
    from mcts_agent.training.iterate_config import IterateConfig

    dpo = run_iterate(IterateConfig(**arm_config(args, "dpo", work / "mcts_dpo", None, backend)), progress=print)
    used = [row["pairs"]["examples"] for row in dpo["history"][1:]]
    sft_dir = work / "sft"
    if not (sft_dir / "iter_0").exists():  # same base model, seed and tasks: reuse its evaluation
        shutil.copytree(work / "mcts_dpo" / "iter_0", sft_dir / "iter_0")
    sft = run_iterate(IterateConfig(**arm_config(args, "sft", sft_dir, max(1, round(sum(used) / len(used))), backend)),
                      progress=print)
    rows = []
    for arm, result in (("mcts-dpo", dpo), ("rs-sft", sft)):
        base = result["history"][0]["eval"]["greedy"]["accuracy"]
        for row in result["history"]:
            ev = row["eval"]["greedy"]
            rows.append({
                "backend": backend, "arm": arm, "iteration": row["iteration"], "greedy_acc": ev["accuracy"],
                "ci95_low": ev["ci95"][0], "ci95_high": ev["ci95"][1], "gain_vs_base": ev["accuracy"] - base,
                "train_examples": row.get("pairs", {}).get("examples"),
                "search_tokens": row.get("search", {}).get("generated_tokens"),
                **{f"{ph}_s": row.get(ph, {}).get("seconds") for ph in PHASES},
            })
    final = {arm: [r for r in rows if r["arm"] == arm][-1] for arm in ("mcts-dpo", "rs-sft")}
    k = args.iterations
    gains = {arm: paired_gain_ci(work / d / "iter_0", work / d / f"iter_{k}")
             for arm, d in (("mcts-dpo", "mcts_dpo"), ("rs-sft", "sft"))}
    verdict = {
        "gain_points": round(100 * gains["mcts-dpo"][0], 1),
        "gain_ci95_points": [round(100 * gains["mcts-dpo"][1], 1), round(100 * gains["mcts-dpo"][2], 1)],
        "sft_gain_points": round(100 * gains["rs-sft"][0], 1),
        "sft_gain_ci95_points": [round(100 * gains["rs-sft"][1], 1), round(100 * gains["rs-sft"][2], 1)],
        "target_gain_points": 10,
        "dpo_beats_sft": final["mcts-dpo"]["greedy_acc"] >= final["rs-sft"]["greedy_acc"],
    }
    return rows, verdict


def phase_table(rows: list[dict[str, Any]], backends: list[str]) -> list[dict[str, Any]]:
    """One row per (arm, iteration, phase), one seconds column per backend, and their ratio."""
    out = []
    keys = dict.fromkeys((r["arm"], r["iteration"]) for r in rows)
    for arm, it in keys:
        for ph in PHASES:
            secs = {b: next((r[f"{ph}_s"] for r in rows if (r["backend"], r["arm"], r["iteration"]) == (b, arm, it)), None)
                    for b in backends}
            if all(v is None for v in secs.values()):
                continue
            row: dict[str, Any] = {"arm": arm, "iteration": it, "phase": ph, **{f"{b}_s": v for b, v in secs.items()}}
            if len(backends) == 2 and None not in secs.values() and secs[backends[1]]:
                row[f"{backends[0]}/{backends[1]}"] = round(secs[backends[0]] / secs[backends[1]], 2)
            out.append(row)
    return out


def paired_gain_ci(base_dir: Path, final_dir: Path, draws: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Gain in accuracy on the same held-out tasks with a paired-bootstrap 95% interval."""

    def correct(d: Path) -> dict[str, bool]:
        lines = (d / "eval" / "greedy" / "results.jsonl").read_text().splitlines()
        return {json.loads(x)["task_id"]: bool(json.loads(x)["correct"]) for x in lines if x.strip()}

    a, b = correct(base_dir), correct(final_dir)
    return paired_bootstrap([int(b[i]) - int(a[i]) for i in sorted(set(a) & set(b))], draws, seed)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, backend in dict.fromkeys((r["arm"], r["backend"]) for r in rows):
        pts = [r for r in rows if (r["arm"], r["backend"]) == (arm, backend)]
        xs = [r["iteration"] for r in pts]
        ys = [r["greedy_acc"] for r in pts]
        err = [[y - r["ci95_low"] for y, r in zip(ys, pts)], [r["ci95_high"] - y for y, r in zip(ys, pts)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, label=f"{arm} ({backend})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("held-out greedy accuracy")
    ax.set_xticks(sorted({r["iteration"] for r in rows}))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Self-improvement (embedded SmolLM2-135M, 95% CI)")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

"""Wall time against a public peer: llm-reasoners MCTS vs our batched planner, side by side.

Both sides search the same GSM8K problems with the same model directory (the embedded
SmolLM2-135M-Instruct, fp32, CPU, same torch thread count), the same prompts, the same
MCTS budget (iterations = simulations), branching (``n_action``), depth limit, step token
cap, sampling settings and self-evaluation reward ("Yes" vs "No" after the same question).

* peer: llm-reasoners 1.0.2 (``reasoners.algorithm.MCTS`` + ``HFModel``) in its own venv
  ``.venv-peer`` (``--setup`` or ``bash benchmarks/setup_peer.sh``), run as a subprocess
  with ``benchmarks/_peer_reasoners_side.py``: one problem after another, the way its API
  (``Reasoner(example)``) works.
* ours: ``Planner`` with ``algo=mcts`` and the ``self-eval`` critic over ALL problems at once.
* ours, token-matched (``--match-tokens``): more simulations, stopped at the peer's mean
  generated tokens per problem, because one llm-reasoners iteration also rolls out to a
  leaf (several expansions) while one of our simulations is one expansion.

Wall and process-CPU seconds exclude model loading (reported apart). Both sides' answers are
scored by our env's verifier. Target: peer wall / ours wall >= 10. On a shared machine
compare ``cpu_s`` too: it is far less sensitive to other processes than wall time.

    python -m mcts_agent.benchmarks.peer_llm_reasoners --setup --tasks 8 --simulations 8 --branching 4 --match-tokens

The peer's raw output is kept in ``<out>.peer.json``; ``--reuse-peer`` reads it back so our
side can be re-measured after a change without the (slow) peer run; ``--peer-only`` runs the
peer side alone (nothing of ours in the same process's time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from mcts_agent.benchmarks.common import print_table, write_result

REPO = Path(__file__).resolve().parents[1]
PEER_SIDE = Path(__file__).with_name("_peer_reasoners_side.py")
SETUP = Path(__file__).with_name("setup_peer.sh")
DEFAULT_DATA = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
MARK = "\x00"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="GSM8K JSONL file, folder or datasets id")
    p.add_argument("--tasks", type=int, default=8, help="problems (the first N of the file)")
    p.add_argument("--simulations", type=int, default=8, help="MCTS iterations per problem, both sides")
    p.add_argument("--branching", type=int, default=4, help="candidate steps per expansion (peer: n_action)")
    p.add_argument("--depth", type=int, default=5, help="step budget (ours: env max_steps; peer: depth_limit)")
    p.add_argument("--max-step-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    p.add_argument("--leaves-per-tree", type=int, default=1,
                   help="ours: MCTS leaves selected per tree per round (larger policy batches; the peer has no such knob)")
    p.add_argument("--model", default=None, help="model for both sides (default: the embedded SmolLM2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peer-venv", default=str(REPO / ".venv-peer"))
    p.add_argument("--setup", action="store_true", help="create the peer venv first (benchmarks/setup_peer.sh)")
    p.add_argument("--skip-peer", action="store_true", help="run our side only")
    p.add_argument("--peer-only", action="store_true",
                   help="run the peer side only and keep it in <out>.peer.json, for a later --reuse-peer")
    p.add_argument("--match-tokens", action="store_true", help="also run ours at the peer's token budget")
    p.add_argument("--reuse-peer", default=None, metavar="PEER_JSON",
                   help="reuse the peer side of an earlier run (its <out>.peer.json) instead of running it again; "
                        "its job (prompts, budgets, model, threads) must equal this run's")
    p.add_argument("--out", default="results/peer_llm_reasoners.json")
    args = p.parse_args(argv)
    for name in ("tasks", "simulations", "branching", "depth", "max_step_tokens", "threads", "leaves_per_tree"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.peer_only and (args.skip_peer or args.reuse_peer):
        p.error("--peer-only runs the peer side: drop --skip-peer / --reuse-peer")
    return args


# ----- our side --------------------------------------------------------------------------
def run_ours(backend: Any, env: Any, tasks: list, args: argparse.Namespace, token_budget: int | None = None,
             label: str = "ours") -> dict[str, Any]:
    from mcts_agent.critics import make_critic
    from mcts_agent.search import Planner, SearchConfig

    sims = args.simulations if token_budget is None else 100 * args.simulations
    cfg = SearchConfig(algo="mcts", simulations=sims, branching=args.branching,
                       max_step_tokens=args.max_step_tokens, temperature=args.temperature, top_p=args.top_p,
                       token_budget=token_budget, max_trees_in_flight=len(tasks), seed=args.seed,
                       leaves_per_tree=args.leaves_per_tree)
    planner = Planner(backend, env, cfg, make_critic("self-eval", backend, env), env_id="math/gsm8k")
    load0 = os.getloadavg()[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    trees = planner.run(tasks)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    s = planner.stats
    answers = [t.answer for t in trees]
    return {
        "side": label, "wall_s": wall, "cpu_s": cpu, **score(env, tasks, answers),
        "generated_tokens": s.generated_tokens, "simulations": sum(int(t.stats["simulations"]) for t in trees),
        "policy_calls": s.policy_calls, "eval_calls": s.critic_calls, "policy_s": s.policy_seconds,
        "eval_s": s.critic_seconds, "outside_s": max(0.0, s.wall_seconds - s.policy_seconds - s.critic_seconds),
        "nodes": s.nodes, "mean_batch_rows": sum(s.batch_sizes) / max(1, len(s.batch_sizes)),
        "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)], "answers": answers,
        "config": cfg.to_dict(),
    }


def score(env: Any, tasks: list, answers: list[str | None]) -> dict[str, Any]:
    correct = sum(bool(a is not None and env.verify(a, t)) for a, t in zip(answers, tasks))
    return {"correct": correct, "accuracy": correct / len(tasks)}


# ----- the peer side ---------------------------------------------------------------------
def peer_job(backend: Any, env: Any, tasks: list, model_dir: str, args: argparse.Namespace) -> dict[str, Any]:
    """Everything the peer needs, with prompts rendered here so both sides see the same text.

    The self-eval prompt of each problem is our critic's own prompt for a one-step node,
    split around that step: the peer puts its numbered steps in between.
    """
    from mcts_agent.critic import NodeView
    from mcts_agent.critics.self_eval import SelfEvalCritic
    from mcts_agent.envs.base import EnvState

    critic = SelfEvalCritic(backend)
    if critic.config.mode != "chat" or critic.config.positive != ("Yes",) or critic.config.negative != ("No",):
        raise SystemExit("the peer mirrors the default self-eval critic (chat mode, 'Yes' vs 'No'); it changed")
    problems = []
    for t in tasks:
        view = NodeView(prompt="", question=t.question, steps=(MARK,), answer=None, terminal=False)
        prefix, suffix = critic.prompt(view).split(f"Step 1: {MARK}")
        problems.append({"id": t.id, "question": t.question, "eval_prefix": prefix, "eval_suffix": suffix,
                         "prompt": env.policy_prompt(EnvState(task=env.search_view(t)), backend.format_chat)})
    check_eval_prompt(critic, problems[0])
    return {"model": model_dir, "threads": args.threads, "seed": args.seed, "problems": problems,
            "n_iters": args.simulations, "n_action": args.branching, "depth_limit": args.depth,
            "max_step_tokens": args.max_step_tokens, "temperature": args.temperature, "top_p": args.top_p,
            "w_exp": 1.0, "answers_py": str(REPO / "envs" / "math" / "answers.py")}


def numbered(steps: Sequence[str]) -> str:
    """Steps as the peer numbers them for self-evaluation (our critic's format)."""
    return "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))


def check_eval_prompt(critic: Any, problem: dict[str, Any]) -> None:
    """The peer's self-eval prompt (rebuilt as the peer does) equals our critic's."""
    from mcts_agent.critic import NodeView

    steps = ("2 + 3 = 5.", "The answer is 5.")
    ours = critic.prompt(NodeView(prompt="", question=problem["question"], steps=steps, answer="5", terminal=True))
    if problem["eval_prefix"] + numbered(steps) + problem["eval_suffix"] != ours:
        raise SystemExit("the peer's self-eval prompt differs from our critic's; update _peer_reasoners_side.py")


def run_peer(job: dict[str, Any], env: Any, tasks: list, args: argparse.Namespace) -> dict[str, Any]:
    load0 = os.getloadavg()[0]
    if args.reuse_peer:
        saved = json.loads(Path(args.reuse_peer).read_text(encoding="utf-8"))
        if saved.get("job") != job:
            raise SystemExit(f"{args.reuse_peer} was run with another job (prompts, budgets, model or threads); "
                             "run the peer again without --reuse-peer")
        out = saved["out"]
    else:
        out = call_peer(job, args)
        Path(args.out).with_suffix(".peer.json").write_text(json.dumps({"job": job, "out": out}), encoding="utf-8")
    m = out["meter"]
    answers = [r["answer"] for r in out["rows"]]
    return {
        "side": "llm-reasoners", "wall_s": out["wall_seconds"], "cpu_s": out["cpu_seconds"],
        "load_s": out["load_seconds"], **score(env, tasks, answers), "generated_tokens": m["generated_tokens"],
        "simulations": args.simulations * len(tasks), "policy_calls": m["generate_calls"],
        "eval_calls": m["eval_calls"], "policy_s": m["generate_seconds"], "eval_s": m["eval_seconds"],
        "outside_s": max(0.0, out["wall_seconds"] - m["generate_seconds"] - m["eval_seconds"]),
        "nodes": sum(r["nodes"] for r in out["rows"]), "load_avg": out.get("load_avg") or (None if args.reuse_peer else [round(load0, 2), round(os.getloadavg()[0], 2)]),
        "answers": answers, "per_problem": out["rows"], "versions": out["versions"], "reused_from": args.reuse_peer,
    }


def call_peer(job: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Run ``_peer_reasoners_side.py`` in the peer venv on ``job``; return its output."""
    python = Path(args.peer_venv) / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"no peer venv at {args.peer_venv}; run with --setup or: bash {SETUP}")
    with tempfile.TemporaryDirectory(prefix="peer-reasoners-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        threads = str(args.threads)
        child_env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run([str(python), str(PEER_SIDE), str(job_path), str(out_path)], env=child_env, cwd=tmp)
        if proc.returncode != 0:
            raise SystemExit(f"the llm-reasoners side failed (exit {proc.returncode}); see its output above")
        return json.loads(out_path.read_text(encoding="utf-8"))


# ----- report ----------------------------------------------------------------------------
def ratios(peer: dict[str, Any], ours: dict[str, Any]) -> dict[str, float]:
    per_tok = lambda r, k: r[k] / max(1, r["generated_tokens"])  # noqa: E731
    return {"wall_ratio": peer["wall_s"] / ours["wall_s"], "cpu_ratio": peer["cpu_s"] / ours["cpu_s"],
            "tokens_ratio": peer["generated_tokens"] / max(1, ours["generated_tokens"]),
            "wall_per_token_ratio": per_tok(peer, "wall_s") / per_tok(ours, "wall_s")}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.setup:
        subprocess.run(["bash", str(SETUP), args.peer_venv], check=True)
    import torch

    torch.set_num_threads(args.threads)
    from mcts_agent import envs
    from mcts_agent.llm.model_store import resolve_model
    from mcts_agent.llm.transformers_backend import TransformersBackend
    from mcts_agent.llm.types import GenerationRequest

    tasks = envs.load_tasks("math/gsm8k", path=args.data, limit=args.tasks)
    env = envs.make("math/gsm8k", max_steps=args.depth)
    model_dir = resolve_model(args.model)
    t0 = time.perf_counter()
    backend = TransformersBackend(model_dir, dtype="float32", device="cpu", seed=args.seed)
    load_s = time.perf_counter() - t0
    backend.generate([GenerationRequest(prompt="Warm up.", max_tokens=2)])
    backend.score(["Warm up."], ["Yes"])
    print(f"[ours] model loaded in {load_s:.1f}s from {model_dir}; {len(tasks)} problems", file=sys.stderr)

    job = None if args.skip_peer else peer_job(backend, env, tasks, model_dir, args)  # fails early if prompts differ
    if args.peer_only:
        assert job is not None  # parse() refuses --peer-only with --skip-peer
        backend.close()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        peer = run_peer(job, env, tasks, args)
        print(f"[peer] {peer['wall_s']:.1f}s wall, {peer['cpu_s']:.1f}s CPU, {peer['generated_tokens']} tokens; "
              f"kept in {Path(args.out).with_suffix('.peer.json')}", file=sys.stderr)
        return peer
    rows = [dict(run_ours(backend, env, tasks, args), load_s=load_s)]
    print(f"[ours] {rows[0]['wall_s']:.1f}s, accuracy {rows[0]['accuracy']:.3f}", file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_result(args.out, "peer_llm_reasoners", vars(args), rows, partial=True)  # kept if the peer fails
    summary: dict[str, Any] = {}
    if job is not None:
        peer = run_peer(job, env, tasks, args)
        rows.insert(0, peer)
        summary = ratios(peer, rows[1])
        if args.match_tokens:
            budget = math.ceil(peer["generated_tokens"] / len(tasks))
            matched = run_ours(backend, env, tasks, args, token_budget=budget, label="ours (token-matched)")
            rows.append(dict(matched, load_s=load_s))
            summary["token_matched"] = ratios(peer, matched)
    backend.close()

    os.environ.setdefault("COLUMNS", "220")  # rich wraps to 80 columns without a terminal
    for r in rows:
        r["tok_per_s"] = r["generated_tokens"] / r["wall_s"] if r["wall_s"] else 0.0
    print_table(f"llm-reasoners MCTS vs ours: {len(tasks)} GSM8K problems, {args.simulations} iterations, "
                f"branching {args.branching}, {args.threads} thread(s)", rows,
                ["side", "wall_s", "cpu_s", "load_s", "accuracy", "correct", "generated_tokens", "tok_per_s",
                 "policy_calls", "eval_calls", "policy_s", "eval_s", "outside_s", "nodes"])
    if summary:
        print("peer/ours: " + ", ".join(f"{k} {v:.2f}x" for k, v in summary.items() if isinstance(v, float)))
        if "token_matched" in summary:
            print("peer/ours (token-matched): " + ", ".join(f"{k} {v:.2f}x" for k, v in summary["token_matched"].items()))
    return write_result(args.out, "peer_llm_reasoners", vars(args), rows,
                        summary=summary, targets={"wall_ratio": ">= 10"}, model_dir=model_dir,
                        task_ids=[t.id for t in tasks])


if __name__ == "__main__":
    main()

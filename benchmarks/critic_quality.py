"""Critic quality: do trained critics know something the vote does not?

On tasks held out from the critics' training, for each critic (self-eval, the judge, a
trained process reward model, a trained value model):

* step AUC (does a step's subtree reach a correct answer?) and answer AUC (is a terminal
  right?) over every node of outcome-mode MCTS trees (critics see question and steps only);
* best-of-N reranked by the critic, and majority vote weighted by its scores, against plain
  majority vote over the *same* N samples per task: accuracy with a paired-bootstrap 95%
  interval of the difference; and the critic's answer AUC within each task (reranking needs
  that one: a critic can tell easy tasks from hard ones and still not rank a task's answers).

The PRM and the value model are trained (``training.critic_train``) on MCTS trees of other
tasks of the same env; their held-out questions never appear in training.

    python -m mcts_agent.benchmarks.critic_quality --train-tasks 64 --eval-tasks 60 --samples 8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from mcts_agent.benchmarks.common import paired_bootstrap, print_table, write_result

CRITIC_NAMES = ("self-eval", "judge", "prm", "value")


def search_trees(tasks: Sequence, env_id: str, backend: Any, config: dict, folder: Path, critic: Any = None) -> list:
    """Outcome-mode trees of ``tasks`` (resumed from ``folder`` when already searched)."""
    from mcts_agent import envs
    from mcts_agent.io import load_trees
    from mcts_agent.runner import run_tasks
    from mcts_agent.search import SearchConfig

    env = envs.make(env_id, max_steps=4, reward_mode="outcome")
    run_tasks(tasks, env, backend, SearchConfig.from_dict(config), folder, critic, env_id=env_id)
    return load_trees(folder / "trees.jsonl")


def rerank(trees: Sequence, critic: Any, key: Any) -> dict[str, Any]:
    """Per tree, whether each selection rule picks a right answer: the critic's top-scored
    answer, the majority vote, and the vote weighted by critic scores (Math-Shepherd's
    weighted self-consistency); and the critic's answer AUC within each task."""
    from collections import defaultdict

    from mcts_agent.search.answer import vote
    from mcts_agent.training.common import reward_correct
    from mcts_agent.training.critic_train import tree_views
    from mcts_agent.training.monitors import roc_auc

    picks: dict[str, list[bool]] = {"rerank": [], "vote": [], "weighted_vote": []}
    within: list[float] = []
    for tree in trees:
        answered = [(n, v) for n, v in zip(tree.nodes[1:], tree_views(tree)) if n.terminal and n.answer is not None]
        if not answered:
            for rule in picks.values():
                rule.append(False)
            continue
        scores = critic([v for _, v in answered])
        right = [bool(reward_correct(tree, n)) for n, _ in answered]
        best = max(range(len(answered)), key=lambda i: (scores[i], -answered[i][0].id))
        picks["rerank"].append(right[best])
        voted = vote(tree, key)
        picks["vote"].append(bool(voted is not None and reward_correct(tree, voted)))
        mass: dict[str, float] = defaultdict(float)
        for (n, _), s in zip(answered, scores):
            mass[key(n.answer)] += s * max(1, n.merged)
        top = max(mass, key=lambda a: mass[a])
        picks["weighted_vote"].append(next(r for (n, _), r in zip(answered, right) if key(n.answer) == top))
        auc = roc_auc(scores, right)
        if auc is not None:
            within.append(auc)
    return {**picks, "within_task_auc": sum(within) / len(within) if within else None, "mixed_tasks": len(within)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="math/reasoning-gym")
    p.add_argument("--train-tasks", type=int, default=64)
    p.add_argument("--eval-tasks", type=int, default=60)
    p.add_argument("--train-seed", type=int, default=1, help="task seed of the critics' training tasks")
    p.add_argument("--eval-seed", type=int, default=0, help="task seed of the held-out tasks (equal_compute's)")
    p.add_argument("--simulations", type=int, default=8)
    p.add_argument("--branching", type=int, default=3)
    p.add_argument("--samples", type=int, default=8, help="best-of-N samples per held-out task")
    p.add_argument("--critics", default=",".join(CRITIC_NAMES))
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="results/critic_quality_runs")
    p.add_argument("--out", default="results/critic_quality.json")
    args = p.parse_args(argv)
    names = [c.strip() for c in args.critics.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CRITIC_NAMES))
    if unknown:
        p.error(f"--critics names {unknown}; expected some of {list(CRITIC_NAMES)}")

    from mcts_agent import envs
    from mcts_agent.critics import make_critic
    from mcts_agent.llm import load_backend
    from mcts_agent.training.critic_train import CriticTrainConfig, critic_auc, train_critic

    work = Path(args.workdir)
    held = envs.load_tasks(args.env, limit=args.eval_tasks, seed=args.eval_seed)
    held_questions = {t.question for t in held}
    train = [t for t in envs.load_tasks(args.env, limit=args.train_tasks + args.eval_tasks, seed=args.train_seed)
             if t.question not in held_questions][:args.train_tasks]
    env = envs.make(args.env, max_steps=4)
    mcts = {"algo": "mcts", "simulations": args.simulations, "branching": args.branching, "max_step_tokens": 48,
            "temperature": 0.8, "seed": args.seed, "max_trees_in_flight": 16}
    backend = load_backend("transformers")
    try:
        self_eval = make_critic("self-eval", backend, env)
        train_trees = search_trees(train, args.env, backend, mcts, work / "train_mcts", self_eval)
        eval_trees = search_trees(held, args.env, backend, mcts, work / "eval_mcts", self_eval)
        bon_trees = search_trees(held, args.env, backend, {"algo": "bon", "samples": args.samples, "temperature": 0.8,
                                                           "max_solution_tokens": 160, "seed": args.seed,
                                                           "max_trees_in_flight": 16},
                                 work / "eval_bon", make_critic("none"))
        critics: dict[str, Any] = {}
        training: dict[str, Any] = {}
        for name in names:
            if name in ("prm", "value"):
                done = work / name / "train_result.json"
                if not done.exists():
                    train_critic(None, train_trees, CriticTrainConfig(
                        kind=name, epochs=args.epochs, learning_rate=args.lr, val_fraction=0.0, seed=args.seed,
                        output_dir=str(work / name)))
                result = json.loads(done.read_text())
                training[name] = {k: result[k] for k in ("loss_before", "loss_after", "steps", "examples", "seconds")}
                training[name]["label_stats"] = {k: result["label_stats"][k] for k in ("count", "positive_rate", "mean")}
                critics[name] = make_critic(name, path=result["critic_dir"])
            else:
                critics[name] = make_critic(name, backend, env)
        rows = []
        for name, critic in critics.items():
            auc = critic_auc(critic, eval_trees)
            picks = rerank(bon_trees, critic, env.answer_key)
            row = {"critic": name, "step_auc": auc["step_auc"], "answer_auc": auc["answer_auc"], "steps": auc["steps"],
                   "answers": auc["answers"], "bon_within_task_auc": picks["within_task_auc"], "bon_mixed_tasks": picks["mixed_tasks"],
                   "majority_acc": sum(picks["vote"]) / len(picks["vote"])}
            for rule in ("rerank", "weighted_vote"):
                diff, lo, hi = paired_bootstrap([int(a) - int(b) for a, b in zip(picks[rule], picks["vote"])],
                                                seed=args.seed)
                row[f"{rule}_acc"] = sum(picks[rule]) / len(picks[rule])
                row[f"{rule}_minus_vote"] = round(diff, 3)
                row[f"{rule}_ci95"] = [round(lo, 3), round(hi, 3)]
            rows.append(row)
            print(rows[-1], flush=True)
    finally:
        backend.close()
    print_table(f"critics on {len(held)} held-out {args.env} tasks ({args.samples} samples for reranking)", rows)
    return write_result(args.out, "critic_quality", vars(args), rows, training=training,
                        trees={"train": len(train_trees), "eval_mcts": len(eval_trees), "eval_bon": len(bon_trees)})


if __name__ == "__main__":
    main()

"""Run one search configuration over a task set, resumably, writing loadable files.

An output directory holds:

* ``trees.jsonl``   one search tree per finished task (``mcts_agent.io.load_trees``)
* ``results.jsonl`` one line per finished task: answer, correctness, tokens, seconds
* ``summary.json``  accuracy with a 95% interval, totals, where the time went, the config

A task counts as finished once its result line is written; a killed run resumes from
the first unfinished task and keeps everything already written.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mcts_agent.critic import Critic
from mcts_agent.env import SearchEnv, Task
from mcts_agent.errors import ConfigError
from mcts_agent.io import append_tree, atomic_write_json, atomic_write_text, load_trees, save_trees
from mcts_agent.llm.types import Backend
from mcts_agent.search import Planner, SearchConfig
from mcts_agent.tree import Tree


@dataclass
class RunSummary:
    algo: str
    tasks: int
    correct: int
    accuracy: float
    ci95: tuple[float, float]
    generated_tokens: int
    tokens_per_task: float
    seconds: float  # wall time of this invocation (trees overlap, so per-tree seconds do not add up)
    out_dir: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, ci95=list(self.ci95))


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def read_results(path: Path) -> list[dict[str, Any]]:
    """Result lines of a run; a torn last line (a killed write) is ignored."""
    if not path.exists():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ConfigError(f"{path}:{i + 1}: corrupted result line; expected JSON") from None
    return out


def check_fresh(out_dir: str | Path, resume: bool) -> None:
    """Without ``resume``, refuse an ``out_dir`` that already holds a run (nothing there is touched)."""
    out = Path(out_dir)
    if not resume and ((out / "results.jsonl").exists() or (out / "trees.jsonl").exists()):
        raise ConfigError(f"{out} already holds a run; pass resume=True (CLI: --resume) or choose another --out")


def run_tasks(tasks: Sequence[Task], env: SearchEnv, backend: Backend, config: SearchConfig, out_dir: str | Path,
              critic: Critic | None = None, *, env_id: str = "", resume: bool = True,
              progress: Callable[[int, int], None] | None = None) -> RunSummary:
    """Search ``tasks`` (with gold answers) and write trees, results and a summary to ``out_dir``.

    Search sees each task as ``env.search_view`` makes it; gold answers are used only
    here, after a tree is finished, to score its answer.
    """
    out = Path(out_dir)
    check_fresh(out, resume)
    out.mkdir(parents=True, exist_ok=True)
    results_path, trees_path = out / "results.jsonl", out / "trees.jsonl"
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ConfigError("task ids must be unique; duplicated: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1})[:5]))
    done = {r["task_id"]: r for r in read_results(results_path)}
    if done:  # rewrite without a torn last line, so appends start on a clean line
        atomic_write_text(results_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done.values()))
    _drop_unfinished_trees(trees_path, set(done))
    todo = [t for t in tasks if t.id not in done]
    by_id = {t.id: t for t in tasks}
    planner = Planner(backend, env, config, critic, env_id=env_id)
    start = time.perf_counter()
    if progress:
        progress(len(done), len(tasks))
    if todo:
        with open(results_path, "a", encoding="utf-8") as results:
            for _, tree in planner.iter_trees(todo):
                record = _score(env, by_id[tree.task_id], tree)
                tree.meta["correct"] = record["correct"]
                append_tree(trees_path, tree)
                results.write(json.dumps(record, ensure_ascii=False) + "\n")
                results.flush()
                done[tree.task_id] = record
                if progress:
                    progress(len(done), len(tasks))
    records = [done[t.id] for t in tasks if t.id in done]
    correct = sum(bool(r["correct"]) for r in records)
    tokens = sum(r["generated_tokens"] for r in records)
    summary = RunSummary(
        algo=config.algo.value, tasks=len(records), correct=correct,
        accuracy=correct / len(records) if records else 0.0, ci95=wilson_interval(correct, len(records)),
        generated_tokens=tokens, tokens_per_task=tokens / len(records) if records else 0.0,
        seconds=round(time.perf_counter() - start, 3), out_dir=str(out))
    atomic_write_json(out / "summary.json", {
        **summary.to_dict(), "env": env_id, "config": config.to_dict(),
        "this_session": {"wall_seconds": round(time.perf_counter() - start, 3),
                         "policy_seconds": round(planner.stats.policy_seconds, 3),
                         "critic_seconds": round(planner.stats.critic_seconds, 3),
                         "policy_calls": planner.stats.policy_calls, "critic_calls": planner.stats.critic_calls,
                         "mean_batch": (sum(planner.stats.batch_sizes) / len(planner.stats.batch_sizes)
                                        if planner.stats.batch_sizes else 0.0)},
    })
    return summary


def _score(env: SearchEnv, task: Task, tree: Tree) -> dict[str, Any]:
    node = tree.nodes[tree.answer_node] if tree.answer_node is not None else None
    if node is not None and node.state is not None and hasattr(env, "verify_state"):
        correct = bool(env.verify_state(node.state, task))  # agent envs judge the whole episode
    else:
        correct = bool(tree.answer is not None and env.verify(tree.answer, task))
    return {"task_id": task.id, "answer": tree.answer, "gold": task.answer, "correct": correct,
            "nodes": len(tree.nodes), "generated_tokens": int(tree.stats.get("generated_tokens", 0)),
            "policy_calls": int(tree.stats.get("policy_calls", 0)), "seconds": tree.stats.get("seconds", 0.0)}


def _drop_unfinished_trees(trees_path: Path, finished: set[str]) -> None:
    """A tree written without its result line (killed in between) is searched again."""
    if not trees_path.exists():
        return
    trees = load_trees(trees_path)
    keep = [t for t in trees if t.task_id in finished]
    if len(keep) != len(trees):
        save_trees(trees_path, keep)

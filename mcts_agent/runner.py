"""Run one search configuration over a task set, resumably, writing loadable files.

An output directory holds:

* ``trees.jsonl``   one search tree per finished task (``mcts_agent.io.load_trees``)
* ``results.jsonl`` one line per finished task: answer, correctness, tokens, seconds
* ``summary.json``  accuracy with a 95% interval, totals, where the time went, the config
* ``run.json``      the settings the trees were searched with (config, env, critic, model)

A task counts as finished once its result line is written; a killed run resumes from
the first unfinished task and keeps everything already written. Resuming with other
settings is refused (naming what differs) unless ``extend`` is given, because the
finished trees would silently mix two configurations.
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
from mcts_agent.io import append_tree, atomic_write_json, atomic_write_text, json_safe, load_trees, save_trees
from mcts_agent.llm.types import Backend
from mcts_agent.search import Planner, SearchConfig
from mcts_agent.tree import Tree


GRADED_ANSWERS = 16  # terminal checks per tree for the viewer (a code answer costs a sandbox run)


@dataclass
class RunSummary:
    algo: str
    tasks: int
    correct: int
    accuracy: float
    ci95: tuple[float, float]
    generated_tokens: int
    tokens_per_task: float
    seconds: float  # wall time of every session that searched (trees overlap, so per-tree seconds do not add up)
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
    if not resume and _holds_run(out):
        raise ConfigError(f"{out} already holds a run; pass resume=True (CLI: --resume) or choose another --out")


def run_settings(config: SearchConfig, env_id: str = "", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What decides the trees of a run: the search config (less its speed-only fields), env and ``extra``."""
    searched = {k: v for k, v in config.to_dict().items() if k not in SearchConfig.RUNTIME_FIELDS}
    return {"env": env_id, **searched, **(extra or {})}


def check_settings(out_dir: str | Path, settings: dict[str, Any], *, extend: bool = False) -> None:
    """Refuse to resume a run in ``out_dir`` made with other ``settings``, unless ``extend``.

    The error names every field that differs with its recorded and its new value.
    """
    out = Path(out_dir)
    old, complete = _recorded_settings(out)
    if old is None or extend:
        return
    diff = settings_diff(old, settings if complete else {k: settings.get(k) for k in old})
    if diff:
        raise ConfigError(f"{out} holds a run searched with other settings ({diff}); rerun with the recorded "
                          "settings, pass extend=True (CLI: --extend) to search the remaining tasks with the new "
                          "ones, or choose another --out")


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``"simulations 16 -> 32, temperature 0.8 -> 0.5"``: the fields whose values differ."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def _holds_run(out: Path) -> bool:
    return (out / "results.jsonl").exists() or (out / "trees.jsonl").exists()


def _recorded_settings(out: Path) -> tuple[dict[str, Any] | None, bool]:
    """The settings of the run in ``out`` and whether they are complete: ``run.json``, else (runs
    written before it existed) the search config in ``summary.json``."""
    if not _holds_run(out):
        return None, True
    for name in ("run.json", "summary.json"):
        path = out / name
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                raise ConfigError(f"{path} is not valid JSON; expected the run's settings (restore it or "
                                  "choose another --out)") from None
            if name == "run.json":
                return data["settings"], True
            return run_settings(SearchConfig.from_dict(data.get("config", {})), data.get("env", "")), False
    return None, True


def _record_settings(out: Path, settings: dict[str, Any], tasks_done: int) -> None:
    """Write ``run.json``; a changed (extended) setting keeps the earlier one with its task count."""
    path = out / "run.json"
    record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"settings": settings, "earlier": []}
    if record["settings"] != settings:
        record["earlier"].append({"settings": record["settings"], "tasks_done": tasks_done})
        record["settings"] = settings
    elif path.exists():
        return
    atomic_write_json(path, record)


def run_tasks(tasks: Sequence[Task], env: SearchEnv, backend: Backend, config: SearchConfig, out_dir: str | Path,
              critic: Critic | None = None, *, env_id: str = "", resume: bool = True, extend: bool = False,
              settings: dict[str, Any] | None = None,
              progress: Callable[[int, int], None] | None = None) -> RunSummary:
    """Search ``tasks`` (with gold answers) and write trees, results and a summary to ``out_dir``.

    Search sees each task as ``env.search_view`` makes it; gold answers are used only
    here, after a tree is finished, to score its answer. ``settings`` adds what else
    decides the trees (critic, model, ...) to what a resumed run must match.
    """
    out = Path(out_dir)
    check_fresh(out, resume)
    identity = run_settings(config, env_id, settings)
    check_settings(out, identity, extend=extend)
    out.mkdir(parents=True, exist_ok=True)
    results_path, trees_path = out / "results.jsonl", out / "trees.jsonl"
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ConfigError("task ids must be unique; duplicated: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1})[:5]))
    done = {r["task_id"]: r for r in read_results(results_path)}
    if done:  # rewrite without a torn last line, so appends start on a clean line
        atomic_write_text(results_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in done.values()))
    _drop_unfinished_trees(trees_path, set(done))
    _record_settings(out, identity, len(done))
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
                if not getattr(env, "secret_gold", False):  # for viewers; search never saw it
                    tree.meta["gold"] = json_safe(by_id[tree.task_id].answer)
                tree.meta["terminal_correct"] = _grade_terminals(env, by_id[tree.task_id], tree, record["correct"])
                append_tree(trees_path, tree)
                results.write(json.dumps(record, ensure_ascii=False) + "\n")
                results.flush()
                done[tree.task_id] = record
                if progress:
                    progress(len(done), len(tasks))
    sessions = _earlier_sessions(out / "summary.json")
    if todo:
        stats = planner.stats
        sessions.append({"wall_seconds": round(time.perf_counter() - start, 3), "tasks": len(todo),
                         "policy_seconds": round(stats.policy_seconds, 3), "critic_seconds": round(stats.critic_seconds, 3),
                         "policy_calls": stats.policy_calls, "critic_calls": stats.critic_calls,
                         "mean_batch": sum(stats.batch_sizes) / len(stats.batch_sizes) if stats.batch_sizes else 0.0})
    records = [done[t.id] for t in tasks if t.id in done]
    correct = sum(bool(r["correct"]) for r in records)
    tokens = sum(r["generated_tokens"] for r in records)
    summary = RunSummary(
        algo=config.algo.value, tasks=len(records), correct=correct,
        accuracy=correct / len(records) if records else 0.0, ci95=wilson_interval(correct, len(records)),
        generated_tokens=tokens, tokens_per_task=tokens / len(records) if records else 0.0,
        seconds=round(sum(s["wall_seconds"] for s in sessions), 3), out_dir=str(out))
    atomic_write_json(out / "summary.json", {**summary.to_dict(), "env": env_id, "config": config.to_dict(),
                                             "sessions": sessions})
    return summary


def _earlier_sessions(path: Path) -> list[dict[str, Any]]:
    """The per-session timings a previous summary recorded (older summaries: their one session)."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return []
    if "sessions" in data:
        return list(data["sessions"])
    return [data["this_session"]] if "this_session" in data else []


def _score(env: SearchEnv, task: Task, tree: Tree) -> dict[str, Any]:
    node = tree.nodes[tree.answer_node] if tree.answer_node is not None else None
    if node is not None and node.state is not None and hasattr(env, "verify_state"):
        correct = bool(env.verify_state(node.state, task))  # agent envs judge the whole episode
    else:
        correct = bool(tree.answer is not None and env.verify(tree.answer, task))
    gold = None if getattr(env, "secret_gold", False) else task.answer  # hidden tests stay out of result files
    return {"task_id": task.id, "answer": tree.answer, "gold": gold, "correct": correct,
            "nodes": len(tree.nodes), "generated_tokens": int(tree.stats.get("generated_tokens", 0)),
            "policy_calls": int(tree.stats.get("policy_calls", 0)), "seconds": tree.stats.get("seconds", 0.0)}


def _grade_terminals(env: SearchEnv, task: Task, tree: Tree, answer_correct: bool,
                     limit: int = GRADED_ANSWERS) -> dict[str, bool]:
    """The env's verdict on each terminal node of a finished tree, by node id, so viewers colour
    every answer by correctness. The answer node's verdict is ``answer_correct`` (already
    scored); in single-step-answer envs nodes with the same answer share one check; after
    ``limit`` checks the rest stay ungraded (a code answer costs a sandbox run)."""
    verdicts: dict[str, bool] = {}
    seen: dict[str, bool] = {}
    share = not getattr(env, "turn_based", False)  # an agent's episode is judged whole, not by its last reply
    answer = tree.nodes[tree.answer_node] if tree.answer_node is not None else None
    if answer is not None and answer.terminal:
        verdicts[str(tree.answer_node)] = answer_correct
        if share and isinstance(answer.answer, str):
            seen[answer.answer] = answer_correct
    checks = 0
    for i, n in enumerate(tree.nodes):
        if not n.terminal or str(i) in verdicts:
            continue
        key = n.answer if share and isinstance(n.answer, str) else None
        if key is not None and key in seen:
            verdicts[str(i)] = seen[key]
            continue
        if checks >= limit:
            continue
        if n.state is not None and hasattr(env, "verify_state"):
            ok = bool(env.verify_state(n.state, task))
        elif isinstance(n.answer, str):
            ok = bool(env.verify(n.answer, task))
        else:
            continue
        checks += 1
        verdicts[str(i)] = ok
        if key is not None:
            seen[key] = ok
    return verdicts


def _drop_unfinished_trees(trees_path: Path, finished: set[str]) -> None:
    """A tree written without its result line (killed in between) is searched again."""
    if not trees_path.exists():
        return
    trees = load_trees(trees_path)
    keep = [t for t in trees if t.task_id in finished]
    if len(keep) != len(trees):
        save_trees(trees_path, keep)

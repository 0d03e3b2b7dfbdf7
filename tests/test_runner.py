"""The resumable runner: files others can load, resume after a kill, clear errors."""

from __future__ import annotations

import json

import pytest

from mcts_agent.errors import ConfigError
from mcts_agent.io import load_trees
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.runner import run_tasks, wilson_interval
from mcts_agent.search import SearchConfig
from tests.test_planner import LenCritic, script
from tests.toy_env import ToyMathEnv, toy_tasks


def test_run_writes_trees_results_summary(tmp_path) -> None:
    tasks = toy_tasks(3)
    s = run_tasks(tasks, ToyMathEnv(max_steps=4), ScriptedBackend(script), SearchConfig(simulations=3), tmp_path,
                  LenCritic(), env_id="toy")
    trees = load_trees(tmp_path / "trees.jsonl")
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sorted(t.task_id for t in trees) == ["t0", "t1", "t2"]
    assert sorted(r["task_id"] for r in results) == ["t0", "t1", "t2"]
    # The script always answers "2": right only for task t1 (1 + 1).
    assert {r["task_id"]: r["correct"] for r in results} == {"t0": False, "t1": True, "t2": False}
    assert summary["correct"] == s.correct == 1 and summary["tasks"] == 3
    assert summary["ci95"][0] < 1 / 3 < summary["ci95"][1]


def test_resume_skips_finished_tasks_and_repairs_torn_lines(tmp_path) -> None:
    env, cfg = ToyMathEnv(max_steps=4), SearchConfig(simulations=3)
    run_tasks(toy_tasks(2), env, ScriptedBackend(script), cfg, tmp_path, LenCritic())
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"task_id": "t2", "ans')  # a write cut by a kill
    backend = ScriptedBackend(script)
    s = run_tasks(toy_tasks(4), env, backend, cfg, tmp_path, LenCritic())
    assert s.tasks == 4
    searched = {q for b in backend.batches for r in b for q in ("What is 0", "What is 1", "What is 2", "What is 3")
                if q in r.prompt}
    assert searched == {"What is 2", "What is 3"}  # t0 and t1 were finished: not searched again
    assert sorted(t.task_id for t in load_trees(tmp_path / "trees.jsonl")) == ["t0", "t1", "t2", "t3"]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(x) for x in lines)


def test_refuses_to_mix_runs_without_resume(tmp_path) -> None:
    run_tasks(toy_tasks(1), ToyMathEnv(), ScriptedBackend(script), SearchConfig(simulations=1), tmp_path)
    before = (tmp_path / "results.jsonl").read_text()
    with pytest.raises(ConfigError, match="already holds a run"):
        run_tasks(toy_tasks(1), ToyMathEnv(), ScriptedBackend(script), SearchConfig(), tmp_path, resume=False)
    assert (tmp_path / "results.jsonl").read_text() == before


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(5, 10)
    assert round(lo, 3) == 0.237 and round(hi, 3) == 0.763

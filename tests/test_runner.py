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


def test_resume_refuses_changed_settings_naming_them(tmp_path) -> None:
    env = ToyMathEnv(max_steps=4)
    run_tasks(toy_tasks(2), env, ScriptedBackend(script), SearchConfig(simulations=3), tmp_path, LenCritic(),
              settings={"critic": "len"})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ConfigError, match=r"simulations 3 -> 5, temperature 0.8 -> 0.5\).*--extend"):
        run_tasks(toy_tasks(3), env, ScriptedBackend(script), SearchConfig(simulations=5, temperature=0.5), tmp_path,
                  LenCritic(), settings={"critic": "len"})
    with pytest.raises(ConfigError, match=r"critic 'len' -> 'other'"):
        run_tasks(toy_tasks(3), env, ScriptedBackend(script), SearchConfig(simulations=3), tmp_path, LenCritic(),
                  settings={"critic": "other"})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing touched
    # Speed-only fields may change; more tasks with the same settings just continue.
    s = run_tasks(toy_tasks(3), env, ScriptedBackend(script), SearchConfig(simulations=3, max_trees_in_flight=1),
                  tmp_path, LenCritic(), settings={"critic": "len"})
    assert s.tasks == 3


def test_extend_continues_with_new_settings_and_records_both(tmp_path) -> None:
    env = ToyMathEnv(max_steps=4)
    run_tasks(toy_tasks(2), env, ScriptedBackend(script), SearchConfig(simulations=3), tmp_path, LenCritic())
    s = run_tasks(toy_tasks(3), env, ScriptedBackend(script), SearchConfig(simulations=5), tmp_path, LenCritic(),
                  extend=True)
    assert s.tasks == 3
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["settings"]["simulations"] == 5
    assert [(e["settings"]["simulations"], e["tasks_done"]) for e in run["earlier"]] == [(3, 2)]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["simulations"] == 5 and [x["tasks"] for x in summary["sessions"]] == [2, 1]


def test_rerun_of_finished_run_keeps_its_timings(tmp_path) -> None:
    env, cfg = ToyMathEnv(max_steps=4), SearchConfig(simulations=3)
    first = run_tasks(toy_tasks(2), env, ScriptedBackend(script), cfg, tmp_path, LenCritic())
    written = json.loads((tmp_path / "summary.json").read_text())
    again = run_tasks(toy_tasks(2), env, ScriptedBackend(script), cfg, tmp_path, LenCritic())
    assert again.seconds == first.seconds > 0
    assert json.loads((tmp_path / "summary.json").read_text())["sessions"] == written["sessions"]
    assert len(written["sessions"]) == 1 and written["sessions"][0]["tasks"] == 2


def test_trees_carry_gold_and_correctness_for_viewers(tmp_path) -> None:
    run_tasks(toy_tasks(2), ToyMathEnv(max_steps=4), ScriptedBackend(script), SearchConfig(simulations=2), tmp_path,
              LenCritic())
    metas = {t.task_id: t.meta for t in load_trees(tmp_path / "trees.jsonl")}
    assert metas["t1"]["gold"] == "2" and metas["t1"]["correct"] is True
    assert metas["t0"]["correct"] is False


def test_every_terminal_node_is_graded_by_the_env_for_viewers(tmp_path) -> None:
    run_tasks(toy_tasks(2), ToyMathEnv(max_steps=4), ScriptedBackend(script), SearchConfig(simulations=2), tmp_path,
              LenCritic())
    trees = {t.task_id: t for t in load_trees(tmp_path / "trees.jsonl")}
    for task_id, gold in (("t0", "1"), ("t1", "2")):
        nodes = trees[task_id].nodes
        graded = trees[task_id].meta["terminal_correct"]
        assert graded and set(graded) == {str(i) for i, n in enumerate(nodes) if n.terminal}
        assert all(ok == (nodes[int(i)].answer == gold) for i, ok in graded.items())

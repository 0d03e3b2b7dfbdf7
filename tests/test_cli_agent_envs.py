"""``mcts-agent search`` on the agent envs works like on the math envs: trees, results, summary, viewer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mcts_agent.io import load_trees
from mcts_agent.training.common import reward_correct


def cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcts_agent.cli.main", "--quiet", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_envs_command_lists_the_agent_envs() -> None:
    out = cli("envs", timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("tool/bfcl-simple_python", "tool/bfcl-multi_turn_miss_param", "textcraft", "demo/counter"):
        assert name in out.stdout


def test_bad_env_worker_options_are_clear(tmp_path: Path) -> None:
    out = cli("search", "--env", "textcraft", "--env-workers", "0", "--out", str(tmp_path / "x"), timeout=120)
    assert out.returncode == 2 and "SearchConfig.env_workers must be an integer >= 1, got 0" in out.stderr
    out = cli("search", "--env", "textcraft", "--env-executor", "dask", "--out", str(tmp_path / "x"), timeout=120)
    assert out.returncode == 2 and "env_executor must be one of ['serial', 'thread', 'process', 'ray'], got 'dask'" in out.stderr


@pytest.mark.model
@pytest.mark.parametrize("env, extra", [
    ("tool/bfcl-simple_python", ["--max-steps", "2"]),
    ("textcraft", ["--max-steps", "3", "--env-workers", "2"]),
])
def test_search_writes_trees_viewer_and_results(tmp_path: Path, env: str, extra: list[str]) -> None:
    out_dir = tmp_path / "run"
    done = cli("search", "--env", env, "--limit", "2", "--algo", "greedy", "--algo", "mcts", "--simulations", "2",
               "--branching", "2", "--max-step-tokens", "48", "--out", str(out_dir), *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    for algo in ("greedy", "mcts"):
        folder = out_dir / algo
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["tasks"] == 2 and 0.0 <= summary["accuracy"] <= 1.0
        results = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
        assert len(results) == 2 and all(isinstance(r["correct"], bool) for r in results)
        trees = load_trees(folder / "trees.jsonl")
        assert all(t.meta["reward_mode"] == "none" and t.meta["env_id"] == env for t in trees)
        # a real evaluation search: rewards carry no gold, so correctness is unknown, not "wrong"
        assert all(reward_correct(t, n) is None for t in trees for n in t.nodes)
        observed = [n.observation for t in trees for n in t.nodes[1:] if n.observation]
        page = (folder / "viewer.html").read_text()
        if observed:
            assert "observation" in page
        assert all(t.prompt(0) for t in trees)  # the first prompt the policy saw is in every tree
    graphml = tmp_path / "t.graphml"
    exported = cli("export", str(out_dir / "mcts" / "trees.jsonl"), "--format", "graphml", "--out", str(graphml))
    assert exported.returncode == 0, exported.stderr and graphml.stat().st_size > 0


def test_an_output_path_that_is_a_file_is_refused_before_loading_a_model(tmp_path: Path) -> None:
    blocker = tmp_path / "results.txt"
    blocker.write_text("keep me")
    for out in (blocker, blocker / "run"):
        done = cli("search", "--env", "demo/counter", "--out", str(out), timeout=120)
        assert done.returncode == 2, done.stderr
        assert f"'{blocker}' is a file, not a directory; choose another --out" in done.stderr
        assert "Traceback" not in done.stderr and "Loading weights" not in done.stderr
    trees = tmp_path / "trees.jsonl"
    trees.write_text("")
    done = cli("export", str(trees), "--format", "json", "--out", str(blocker / "x.json"), timeout=120)
    assert done.returncode == 2 and f"'{blocker}' is a file, not a directory" in done.stderr
    assert blocker.read_text() == "keep me"


def test_bad_critic_and_no_resume_conflicts_fail_before_the_model_loads(tmp_path: Path) -> None:
    done = cli("search", "--env", "demo/counter", "--critic", "oracle", "--out", str(tmp_path / "a"), timeout=120)
    assert done.returncode == 2 and "unknown critic 'oracle'" in done.stderr
    assert "Loading weights" not in done.stderr
    done = cli("search", "--env", "demo/counter", "--critic", "rollout", "--out", str(tmp_path / "a"), timeout=120)
    assert done.returncode == 2 and "RolloutCritic replays one sampled solution" in done.stderr
    run = tmp_path / "b" / "mcts"
    run.mkdir(parents=True)
    (run / "results.jsonl").write_text("kept\n")
    done = cli("search", "--env", "demo/counter", "--no-resume", "--out", str(tmp_path / "b"), timeout=120)
    assert done.returncode == 2 and "already holds a run" in done.stderr and "Loading weights" not in done.stderr
    assert (run / "results.jsonl").read_text() == "kept\n"

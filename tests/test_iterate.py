"""Iterative MCTS-DPO with the real embedded model: kill -9 and resume gives the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcts_agent.errors import ConfigError
from mcts_agent.training.iterate_config import IterateConfig

pytestmark = pytest.mark.model

TINY = {
    "env": "math/arithmetic", "train_tasks": 3, "eval_tasks": 3, "iterations": 1, "max_steps": 3,
    "critic": "self-eval:0.5,verifier:0.5",
    # one tree at a time, so a kill can land between two finished tasks of a phase
    "search": {"algo": "mcts", "simulations": 2, "branching": 3, "max_step_tokens": 24, "max_solution_tokens": 64,
               "max_trees_in_flight": 1},
    "eval_algos": ["greedy"], "eval_search": {"max_solution_tokens": 64, "max_trees_in_flight": 1},
    "pairs": {"q_margin": 0.0},
    "dpo": {"max_steps": 3, "batch_size": 2, "max_length": 256, "learning_rate": 1e-4},
}


def _run(cfg_path: Path, inside: Path | None = None) -> subprocess.CompletedProcess | int:
    """Run the config; with ``inside`` (a phase's log file), kill -9 its whole process group once
    that file has a line and the phase is not done yet (in the middle of the phase's work) and
    return the group's id."""
    cmd = [sys.executable, "-m", "mcts_agent.cli.main", "--quiet", "iterate", "--config", str(cfg_path)]
    if inside is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 1200
    while not (inside.exists() and inside.read_text().count("\n") >= 1):
        assert proc.poll() is None, f"the run ended before {inside} had a line"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.pid


def _strip(result: dict) -> dict:
    for row in result["history"]:
        for rec in row.values():
            if isinstance(rec, dict):
                rec.pop("seconds", None)
                rec.pop("merged_dir", None)
    result.pop("config")
    return result


def _answers(root: Path, algo: str = "greedy") -> dict[str, str]:
    lines = (root / "iter_1" / "eval" / algo / "results.jsonl").read_text().splitlines()
    return {json.loads(x)["task_id"]: json.loads(x)["answer"] for x in lines}


def test_kill_and_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (tmp_path / f"{d.name}.json").write_text(json.dumps({**TINY, "out_dir": str(d)}))
    done = _run(tmp_path / "a.json")
    assert done is not None and done.returncode == 0, done.stderr[-3000:]
    # Kill b hard inside search (one of three trees written), inside training (one optimizer
    # step logged, of three) and inside evaluation (one of three answers written).
    it = b / "iter_1"
    for inside in (it / "search" / "results.jsonl", it / "train" / "train_log.jsonl", it / "eval" / "greedy" / "results.jsonl"):
        _run(tmp_path / "b.json", inside=inside)
        assert not (inside.parent / "DONE.json").exists(), f"killed after {inside.parent} was done, not inside it"
        assert not (b / "result.json").exists()
    eval0 = (b / "iter_0" / "eval" / "DONE.json").read_text()
    resumed = _run(tmp_path / "b.json")
    assert resumed is not None and resumed.returncode == 0, resumed.stderr[-3000:]
    assert (b / "iter_0" / "eval" / "DONE.json").read_text() == eval0  # finished phases were not redone
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    assert _strip(ra) == _strip(rb)
    assert _answers(a) == _answers(b)
    train = json.loads((a / "iter_1" / "train" / "DONE.json").read_text())
    assert train["steps"] == 3 and train["examples"] >= 1
    logged = [json.loads(x) for x in (a / "iter_1" / "train" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3]

    # A corrupted tree file: a clear error naming it, earlier phases intact.
    trees = b / "iter_1" / "search" / "trees.jsonl"
    trees.write_text("{not json\n" + trees.read_text())
    (b / "iter_1" / "pairs" / "DONE.json").unlink()
    bad = _run(tmp_path / "b.json")
    assert bad is not None and bad.returncode == 2
    assert f"{trees}:1" in bad.stderr
    assert (b / "iter_0" / "eval" / "DONE.json").read_text() == eval0


def test_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SearchConfig.simulations must be an integer >= 1, got 0"):
        IterateConfig(search={"simulations": 0})
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"itrations": 2}))
    with pytest.raises(ConfigError, match=r"unknown IterateConfig keys \['itrations'\]"):
        IterateConfig.load(p)
    with pytest.raises(ConfigError, match="does not exist"):
        IterateConfig.load(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match=r"IterateConfig.pairs: unknown PairConfig keys \['q_margn'\]; known keys: "):
        IterateConfig(pairs={"q_margn": 1})
    with pytest.raises(ConfigError, match=r"IterateConfig.dpo: unknown DPOTrainConfig keys \['lr'\]"):
        IterateConfig(dpo={"lr": 1e-4})


def test_every_example_config_is_valid() -> None:
    examples = sorted((Path(__file__).parent.parent / "examples").glob("iterate*.json"))
    assert len(examples) >= 4
    for path in examples:
        IterateConfig.load(path)  # raises ConfigError naming the file and the bad key

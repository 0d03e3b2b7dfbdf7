"""``mcts-agent search`` options come from the config dataclasses; resume checks; task selection; fast failures."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mcts_agent import envs, hub
from mcts_agent.cli import search_run
from mcts_agent.cli.main import COMMAND_MODULES, app
from mcts_agent.errors import EnvError
from mcts_agent.search import SearchConfig


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcts_agent.cli.main", "--quiet", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[search_run.SearchJob]:
    jobs: list[search_run.SearchJob] = []
    monkeypatch.setattr(search_run, "run_job", jobs.append)
    return jobs


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "250"})


def test_every_search_config_field_is_an_option_with_its_default(captured: list) -> None:
    result = invoke("search", "--env", "demo/counter")
    assert result.exit_code == 0, result.output
    job = captured[0]
    defaults = SearchConfig()
    assert SearchConfig.from_dict(job.search) == defaults  # nothing missing, nothing with another default
    assert set(job.search) == {f.name for f in fields(SearchConfig)} - {"algo"}
    assert job.max_steps is None and job.limit is None and job.task_seed is None and job.algos == ["mcts"]
    args = ["--selection", "uct", "--c-puct", "2.5", "--top-p", "0.5", "--time-budget", "3", "--leaves-per-tree", "2",
            "--widening-alpha", "0.7", "--max-solution-tokens", "99", "--no-merge-duplicates", "--device", "cpu",
            "--cache-dir", "/tmp/c", "--max-steps", "3", "--task-seed", "4", "--extend"]
    assert invoke("search", "--env", "demo/counter", *args).exit_code == 0
    cfg = SearchConfig.from_dict(captured[1].search)
    assert (cfg.selection.value, cfg.c_puct, cfg.top_p, cfg.time_budget, cfg.leaves_per_tree, cfg.widening_alpha,
            cfg.max_solution_tokens, cfg.merge_duplicates) == ("uct", 2.5, 0.5, 3.0, 2, 0.7, 99, False)
    job = captured[1]
    assert (job.policy.device, job.policy.cache_dir, job.max_steps, job.task_seed, job.extend) == ("cpu", "/tmp/c", 3, 4, True)


def test_flags_take_no_value_in_help_and_defaults_agree() -> None:
    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    for command in ([], ["search"], ["generate"], ["export"], ["iterate"], ["models"], ["envs"]):
        out = invoke(*command, "--help").output
        assert "<bool>" not in out, command
    search_help, generate_help = invoke("search", "--help").output, invoke("generate", "--help").output
    assert "--max-trees-in-flight" in search_help and "--device" in search_help and "--cache-dir" in search_help
    from mcts_agent.cli.generate import generate

    defaults = {p.name: p.default.default for p in __import__("inspect").signature(generate).parameters.values()}
    assert defaults["temperature"] == SearchConfig().temperature and defaults["top_p"] == SearchConfig().top_p
    assert generate_help.count("--temperature") == 1


def test_misplaced_backend_options_are_clear(captured: list) -> None:
    result = CliRunner().invoke(app, ["search", "--env", "demo/counter", "--backend", "vllm", "--device", "cpu"])
    assert result.exit_code == 2 and "--device and --cache-dir only apply to --backend transformers" in result.output
    result = CliRunner().invoke(app, ["search", "--env", "demo/counter", "--backend", "vlm"])
    assert result.exit_code == 2 and "unknown backend 'vlm'" in result.output
    assert not captured


def test_limit_takes_the_first_tasks_and_task_seed_samples() -> None:
    from mcts_agent.envs.loading import select

    items = list(range(10))
    assert [x for _, x in select(items, 3)] == [0, 1, 2]
    sampled = [x for _, x in select(items, 3, seed=5)]
    assert sampled == [x for _, x in select(items, 3, seed=5)] and sampled != [0, 1, 2]
    assert [t.id for t in envs.load_tasks("textcraft", limit=3)] == [t.id for t in envs.load_tasks("textcraft")[:3]]


def test_offline_unknown_data_and_model_fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    from mcts_agent.envs.loading import read_records
    from mcts_agent.errors import ModelLoadError
    from mcts_agent.llm.model_store import resolve_model

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("tried the network"))
    with pytest.raises(EnvError, match=r"'nosuch_file' is not a local file or folder.*cannot be reached \(offline\)"):
        read_records("nosuch_file")
    with pytest.raises(ModelLoadError, match=r"'no-such-org/no-such-model' is not a local directory.*offline"):
        resolve_model("no-such-org/no-such-model")
    with pytest.raises(ModelLoadError, match="does not exist"):  # a path that does not exist is a local path
        resolve_model("./no/such/dir")


def test_hub_offline_variables_are_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    hub.hub_reachable.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        assert hub.hub_reachable() is False
    finally:
        hub.hub_reachable.cache_clear()


def test_cli_offline_failures_are_one_line_and_fast(tmp_path: Path) -> None:
    t0 = time.monotonic()
    done = cli("search", "--env", "math/gsm8k", "--data", "nosuch_file", "--out", str(tmp_path / "a"), timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "'nosuch_file' is not a local file or folder" in done.stderr
    done = cli("search", "--env", "demo/counter", "--model", "no-such-org/no-such-model", "--algo", "greedy",
               "--out", str(tmp_path / "b"), timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "'no-such-org/no-such-model' is not a local directory" in done.stderr
    assert time.monotonic() - t0 < 60  # was 26 s + 52 s of retries; now no network attempt at all


@pytest.mark.model
def test_resume_refuses_changed_settings_and_extend_continues(tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = ["search", "--env", "demo/counter", "--algo", "greedy", "--max-solution-tokens", "24", "--out", str(out)]
    done = cli(*base, "--limit", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    folder = out / "greedy"
    ids = [json.loads(x)["task_id"] for x in (folder / "results.jsonl").read_text().splitlines()]
    assert ids == [t.id for t in envs.load_tasks("demo/counter", limit=2)]  # the first N, as the Python API gives
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    seconds = json.loads((folder / "summary.json").read_text())["seconds"]

    changed = cli(*base, "--limit", "3", "--temperature", "0.5", "--critic", "verifier")
    assert changed.returncode == 2 and "temperature 0.8 -> 0.5" in changed.stderr and "--extend" in changed.stderr
    assert "critic" not in changed.stderr  # greedy uses no critic: not a setting of this run
    assert "Loading" not in changed.stderr and {p.name: p.read_bytes() for p in folder.iterdir()} == files

    again = cli(*base, "--limit", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((folder / "summary.json").read_text())["seconds"] == seconds  # a rerun keeps the timings

    extended = cli(*base, "--limit", "3", "--temperature", "0.5", "--extend")
    assert extended.returncode == 0, extended.stderr[-2000:]
    run = json.loads((folder / "run.json").read_text())
    assert run["settings"]["temperature"] == 0.5 and run["earlier"][0]["settings"]["temperature"] == 0.8
    assert len((folder / "results.jsonl").read_text().splitlines()) == 3


@pytest.mark.model
def test_kill_9_inside_search_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    import os
    import signal

    args = ["search", "--env", "demo/counter", "--limit", "3", "--algo", "mcts", "--simulations", "2", "--branching",
            "2", "--max-steps", "3", "--max-step-tokens", "16", "--max-trees-in-flight", "1", "--no-viewer"]
    whole = cli(*args, "--out", str(tmp_path / "a"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    cmd = [sys.executable, "-m", "mcts_agent.cli.main", "--quiet", *args, "--out", str(tmp_path / "b")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = tmp_path / "b" / "mcts" / "results.jsonl"
    deadline = time.monotonic() + 600
    while not (results.exists() and results.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the kill point"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert results.read_text().count("\n") < 3, "killed after the last task: not inside the search"
    resumed = cli(*args, "--out", str(tmp_path / "b"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    def answers(root: Path) -> dict[str, Any]:
        rows = [json.loads(x) for x in (root / "mcts" / "results.jsonl").read_text().splitlines()]
        return {r["task_id"]: (r["answer"], r["correct"], r["nodes"]) for r in rows}

    assert answers(tmp_path / "a") == answers(tmp_path / "b")
    from mcts_agent.io import load_trees

    trees = {t.task_id: [n.action for n in t.nodes] for t in load_trees(tmp_path / "b" / "mcts" / "trees.jsonl")}
    assert trees == {t.task_id: [n.action for n in t.nodes] for t in load_trees(tmp_path / "a" / "mcts" / "trees.jsonl")}

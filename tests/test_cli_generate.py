"""``mcts-agent generate`` and ``mcts-agent models`` through typer's CliRunner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mcts_agent.cli import generate, models


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    models.register(app)
    generate.register(app)
    return app


runner = CliRunner()


def test_help(app: typer.Typer) -> None:
    for command, words in (("generate", ["--backend", "--max-tokens", "--stop", "--json"]), ("models", ["--prepare"])):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        for word in words:
            assert word in result.output


def test_wired_into_main_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mcts_agent.cli.main", "generate", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "--temperature" in out.stdout


def test_models_shows_embedded(app: typer.Typer, tmp_path: Path) -> None:
    result = runner.invoke(app, ["models", "--cache-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["name"] == "smollm2-135m-instruct" and info["prepared"] is False
    assert info["cache_path"].startswith(str(tmp_path))


@pytest.mark.model
def test_real_generation_json(app: typer.Typer) -> None:
    result = runner.invoke(
        app, ["generate", "What is 2+2?", "Name a color.", "-n", "2", "--max-tokens", "4", "-t", "0", "--json"]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["prompt_index"], r["sample"]) for r in lines] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for r in lines:
        assert r["finish_reason"] in ("stop", "length") and 0 < r["num_tokens"] <= 4
        assert r["cumulative_logprob"] <= 0 and isinstance(r["text"], str)


def test_bad_model_path_exits_2(app: typer.Typer, tmp_path: Path) -> None:
    bad = tmp_path / "no-model-here"
    result = runner.invoke(app, ["generate", "hi", "--model", str(bad)])
    assert result.exit_code == 2
    assert str(bad) in result.stderr and "config.json" in result.stderr


def test_bad_settings_exit_2(app: typer.Typer) -> None:
    result = runner.invoke(app, ["generate", "hi", "--top-p", "0"])
    assert result.exit_code == 2 and "top_p" in result.stderr
    result = runner.invoke(app, ["generate", "hi", "--base-url", "http://x"])
    assert result.exit_code == 2 and "--base-url" in result.stderr

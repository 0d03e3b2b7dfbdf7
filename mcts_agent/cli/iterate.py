"""``mcts-agent iterate``: iterative MCTS-DPO self-improvement from a config file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mcts_agent.cli import common


def iterate(
    config: Path = typer.Option(..., "--config", "-c", help="IterateConfig as .json or .toml (see docs/iterate.md)."),
    out: Optional[str] = typer.Option(None, "--out", help="Override out_dir from the config."),
    iterations: Optional[int] = typer.Option(None, help="Override the number of iterations."),
) -> None:
    """Search the train split, extract step pairs, train with DPO, evaluate; K times. Resumable."""
    with common.user_errors():
        from mcts_agent.training.iterate import run_iterate
        from mcts_agent.training.iterate_config import IterateConfig

        cfg = IterateConfig.load(config, out_dir=out, iterations=iterations)
        result = run_iterate(cfg, progress=lambda msg: None if common.quiet() else typer.secho(msg, fg="cyan"))
        for row in result["history"]:
            accs = {a: f"{r['accuracy']:.1%}" for a, r in row["eval"].items() if isinstance(r, dict)}
            typer.echo(f"iteration {row['iteration']}: held-out accuracy {json.dumps(accs)}")
        typer.echo(f"result: {Path(cfg.out_dir) / 'result.json'}")


def register(app: typer.Typer) -> None:
    app.command("iterate")(iterate)

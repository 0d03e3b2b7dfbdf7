"""``mcts-agent train-critic``: a process reward model or a value model from search trees."""

from __future__ import annotations

import json
from typing import Any

import typer

from mcts_agent.cli.common import quiet, user_errors
from mcts_agent.cli.options import command, option_params


def _train_critic(trees: list[str], model: str | None = None, **values: Any) -> None:
    """Train a critic on outcome-mode trees; use it with ``--critic prm:OUT/critic`` (or value:...)."""
    from pathlib import Path

    from tqdm import tqdm

    from mcts_agent.errors import ConfigError
    from mcts_agent.io import load_trees
    from mcts_agent.training.critic_train import CriticTrainConfig, train_critic

    with user_errors():
        cfg = CriticTrainConfig(**values)
        for path in trees:
            if not Path(path).is_file():
                raise ConfigError(f"--trees {path!r} is not a file; expected a trees.jsonl written by a search "
                                  "with --reward-mode outcome")
        loaded = [t for path in trees for t in load_trees(path)]
        bar = tqdm(desc="critic training", unit="step", disable=quiet())

        def progress(step: int, steps: int) -> None:
            bar.total = steps
            bar.update(step - bar.n)

        result = train_critic(model, loaded, cfg, progress=progress)
        bar.close()
    summary = {k: v for k, v in result.to_dict().items() if k not in ("losses", "config")}
    typer.echo(json.dumps(summary, default=str))
    typer.echo(f"use it: --critic {result.kind}:{result.critic_dir}")


def _options() -> list[Any]:
    import inspect

    from mcts_agent.training.critic_train import CriticTrainConfig

    own = [
        inspect.Parameter("trees", inspect.Parameter.KEYWORD_ONLY, annotation=list[str], default=typer.Option(
            ..., "--trees", help="trees.jsonl of an outcome-mode search (--reward-mode outcome); repeat for more.")),
        inspect.Parameter("model", inspect.Parameter.KEYWORD_ONLY, annotation=str | None, default=typer.Option(
            None, "--model", help="Backbone: HF id or directory (default: the embedded model), or a critic "
                                  "directory to train further.")),
    ]
    return own + option_params(CriticTrainConfig, skip=("lora_target_modules",))


def register(app: typer.Typer) -> None:
    app.command("train-critic")(command(_train_critic, _options()))

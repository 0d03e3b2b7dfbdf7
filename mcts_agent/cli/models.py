"""``mcts-agent models``: show the embedded model and prepare its Hugging Face copy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mcts_agent.cli.common import quiet, user_errors


def register(app: typer.Typer) -> None:
    app.command("models")(models)


def models(
    prepare: bool = typer.Option(False, "--prepare", help="Dequantize the embedded GGUF into the cache now (once)."),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", help="Cache root (default: $MCTS_AGENT_CACHE or ~/.cache/mcts-agent)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the information as one JSON object."),
) -> None:
    """Show the embedded default model: its GGUF, whether the HF copy is prepared, the cache path."""
    from mcts_agent.llm import model_store

    with user_errors():
        if prepare:
            path = model_store.prepare_embedded(cache_dir, progress=None if quiet() else _progress)
            if not quiet():
                typer.echo(f"ready: {path}", err=True)
        info = model_store.embedded_model_info(cache_dir)
    if as_json:
        typer.echo(json.dumps(info))
        return
    gguf = f"{info['gguf_path']} ({info['gguf_bytes'] / 1e6:.1f} MB)" if info["gguf_path"] else f"missing: {info['problem']}"
    state = "prepared" if info["prepared"] else "not prepared (run `mcts-agent models --prepare`; done on first use too)"
    typer.echo(f"embedded model: {info['name']}  (use --model embedded, or leave --model out)")
    typer.echo(f"  GGUF source : {gguf}")
    typer.echo(f"  HF copy     : {state}")
    typer.echo(f"  cache path  : {info['cache_path']}")
    typer.echo("other models: any Hugging Face model id or local directory with config.json (--model)")


def _progress(message: str) -> None:
    typer.echo(message, err=True)

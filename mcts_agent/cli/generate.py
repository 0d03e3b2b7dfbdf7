"""``mcts-agent generate``: sample completions for a few prompts from any backend, in one batched call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from mcts_agent.cli.common import quiet, user_errors
from mcts_agent.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


def generate(
    prompts: List[str] = typer.Argument(..., help="One or more prompts; all go to the backend in one batched call."),
    backend: str = typer.Option("transformers", "--backend", "-b", help="transformers | vllm | openai."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="HF id, local directory, or 'embedded' (default)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Server URL for --backend openai."),
    n: int = typer.Option(1, "-n", "--n", help="Samples per prompt (they share one prompt pass)."),
    max_tokens: int = typer.Option(64, "--max-tokens", help="Most tokens to generate per sample."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="0 means greedy."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass, in (0, 1]."),
    stop: Optional[List[str]] = typer.Option(None, "--stop", help="Stop string (repeatable); not included in the text."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed (same seed, same samples)."),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Wrap each prompt as a user message in the chat template."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per completion (JSON lines)."),
    device: Optional[str] = typer.Option(None, "--device", help="transformers: cpu, cuda, cuda:1 (default: auto)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="transformers: cache root for the embedded model."),
) -> None:
    """Generate completions and print text, finish reason and log-probability (or JSON lines)."""
    from mcts_agent.llm import load_backend
    from mcts_agent.llm.types import GenerationRequest

    with user_errors():
        kwargs = _backend_kwargs(backend, base_url, device, cache_dir)
        # Validate the sampling settings before paying for a model load.
        GenerationRequest("", n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=tuple(stop or ()))
        if not quiet():
            typer.echo(f"loading {backend} backend (model: {model or 'embedded'})...", err=True)
        with load_backend(backend, model, **kwargs) as engine:
            texts = [engine.format_chat([{"role": "user", "content": p}]) if chat else p for p in prompts]
            requests = [
                GenerationRequest(
                    t, n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=tuple(stop or ()), seed=seed
                )
                for t in texts
            ]
            results = engine.generate(requests)
    for i, completions in enumerate(results):
        for j, c in enumerate(completions):
            if as_json:
                typer.echo(json.dumps(_record(i, j, c)))
            else:
                header = f"[prompt {i} sample {j}] finish={c.finish_reason.value}"
                header += f" stop={c.stop_reason!r}" if c.stop_reason else ""
                typer.echo(f"{header} logprob={c.cumulative_logprob:.3f} tokens={len(c.token_ids)}")
                typer.echo(c.text)


def _backend_kwargs(backend: str, base_url: str | None, device: str | None, cache_dir: Path | None) -> dict[str, Any]:
    """Only pass options the chosen backend understands; misplaced ones are errors, not silent no-ops."""
    kwargs: dict[str, Any] = {}
    if base_url is not None:
        if backend != "openai":
            raise ConfigError(f"--base-url only applies to --backend openai, not {backend!r}")
        kwargs["base_url"] = base_url
    if device is not None or cache_dir is not None:
        if backend != "transformers":
            raise ConfigError(f"--device and --cache-dir only apply to --backend transformers, not {backend!r}")
        if device is not None:
            kwargs["device"] = device
        if cache_dir is not None:
            kwargs["cache_dir"] = cache_dir
    return kwargs


def _record(prompt: int, sample: int, c: Any) -> dict[str, Any]:
    return {
        "prompt_index": prompt,
        "sample": sample,
        "text": c.text,
        "finish_reason": c.finish_reason.value,
        "stop_reason": c.stop_reason,
        "cumulative_logprob": c.cumulative_logprob,
        "num_tokens": len(c.token_ids),
    }

"""``mcts-agent generate``: sample completions for a few prompts from any backend, in one batched call."""

from __future__ import annotations

import inspect
import json
from typing import Any, List, Optional

import typer

from mcts_agent.cli.common import quiet, user_errors
from mcts_agent.cli.options import command, default_of, option_params
from mcts_agent.llm.spec import BackendSpec
from mcts_agent.search.config import SearchConfig


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


def generate(
    prompts: List[str] = typer.Argument(..., help="One or more prompts; all go to the backend in one batched call."),
    n: int = typer.Option(1, "-n", "--n", help="Samples per prompt (they share one prompt pass)."),
    max_tokens: int = typer.Option(64, "--max-tokens", help="Most tokens to generate per sample."),
    temperature: float = typer.Option(default_of(SearchConfig, "temperature"), "--temperature", "-t",
                                      help="0 means greedy (default: the same as search)."),
    top_p: float = typer.Option(default_of(SearchConfig, "top_p"), "--top-p",
                                help="Nucleus sampling mass, in (0, 1] (default: the same as search)."),
    stop: Optional[List[str]] = typer.Option(None, "--stop", help="Stop string (repeatable); not included in the text."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed (same seed, same samples)."),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Wrap each prompt as a user message in the chat template."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per completion (JSON lines)."),
    **backend_options: Any,
) -> None:
    """Generate completions and print text, finish reason and log-probability (or JSON lines)."""
    from mcts_agent.llm.types import GenerationRequest

    with user_errors():
        spec = BackendSpec(**backend_options)
        # Validate the sampling settings before paying for a model load.
        GenerationRequest("", n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=tuple(stop or ()))
        if not quiet():
            typer.echo(f"loading {spec.backend} backend (model: {spec.model or 'embedded'})...", err=True)
        with spec.load() as engine:
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


_own = [p for p in inspect.signature(generate).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
command(generate, _own, option_params(BackendSpec, skip=("options",), panel="Model",
                                      names={"backend": ("--backend", "-b"), "model": ("--model", "-m")}))


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

"""``mcts-agent search``: run MCTS or a baseline on a benchmark, write trees and results."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mcts_agent.cli import common

ALGO_HELP = "Search algorithm; repeat to compare several on the same tasks: mcts | greedy | bon | sc | beam."


def search(
    env: str = typer.Option(..., "--env", help="Environment, e.g. math/gsm8k, code/mbpp, tool/bfcl-simple_python, "
                                               "textcraft (`mcts-agent envs` lists them)."),
    data: Optional[str] = typer.Option(None, "--data", help="Task file (JSONL) or a `datasets` id; env default if omitted."),
    split: str = typer.Option("test", help="Dataset split."),
    limit: Optional[int] = typer.Option(None, help="Search only the first N tasks."),
    algo: list[str] = typer.Option(["mcts"], "--algo", help=ALGO_HELP),
    backend: str = typer.Option("transformers", help="Policy backend: transformers | vllm | openai."),
    model: Optional[str] = typer.Option(None, help="HF model id or local dir; the embedded SmolLM2-135M if omitted."),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible server URL (backend openai)."),
    critic: str = typer.Option("self-eval", help="Critic for MCTS, beam and best-of-N: self-eval | verifier | rollout | judge | none | ensemble spec."),
    reward_mode: str = typer.Option("none", help="none (evaluation: gold never reaches search) | outcome (training)."),
    max_steps: int = typer.Option(6, help="Step budget of an episode (ends it as truncated)."),
    simulations: int = typer.Option(16, help="MCTS expansions per tree."),
    branching: int = typer.Option(4, help="Candidate steps sampled per expansion."),
    widening: float = typer.Option(0.0, help="MCTS progressive widening constant (0 = off): a node is sampled "
                                              "again while children < widening * sqrt(visits)."),
    samples: int = typer.Option(8, help="Best-of-N / self-consistency samples per task."),
    beam_width: int = typer.Option(4, help="Beam width."),
    temperature: float = typer.Option(0.8, help="Sampling temperature."),
    max_step_tokens: int = typer.Option(64, help="Token cap of one step."),
    token_budget: Optional[int] = typer.Option(None, help="Generated-token budget per tree."),
    answer_rule: str = typer.Option("vote", help="MCTS answer: vote | visits | q."),
    trees_in_flight: int = typer.Option(64, help="Trees searched at once (batched together)."),
    seed: int = typer.Option(0, help="Seed for tasks and sampling."),
    env_workers: int = typer.Option(1, help="Env steps run at once: each round's steps go to this many workers."),
    env_executor: str = typer.Option("thread", help="Where env steps run: serial | thread | process."),
    out: Path = typer.Option(Path("runs/search"), help="Output directory (one sub-folder per algorithm)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue a killed run in --out."),
    viewer: bool = typer.Option(True, "--viewer/--no-viewer", help="Write viewer.html beside the trees."),
) -> None:
    """Search a benchmark with each --algo; print accuracy, tokens and time side by side."""
    with common.user_errors():
        from mcts_agent.cli.search_run import SearchJob, run_job

        job = SearchJob(env=env, data=data, split=split, limit=limit, algos=algo, backend=backend, model=model,
                        base_url=base_url, critic=critic, reward_mode=reward_mode, max_steps=max_steps,
                        search={"simulations": simulations, "branching": branching, "widening": widening, "samples": samples,
                                "beam_width": beam_width, "temperature": temperature,
                                "max_step_tokens": max_step_tokens, "token_budget": token_budget,
                                "answer_rule": answer_rule, "max_trees_in_flight": trees_in_flight, "seed": seed,
                                "env_workers": env_workers, "env_executor": env_executor},
                        seed=seed, out=out, resume=resume, viewer=viewer)
        run_job(job)


def register(app: typer.Typer) -> None:
    app.command("search")(search)

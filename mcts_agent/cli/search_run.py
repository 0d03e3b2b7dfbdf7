"""The work behind ``mcts-agent search`` (kept apart from option parsing)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from tqdm import tqdm

from mcts_agent.cli import common
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.runner import RunSummary, check_fresh, run_tasks
from mcts_agent.search import Algo, SearchConfig

NEEDS_CRITIC = {Algo.MCTS, Algo.BEAM, Algo.BEST_OF_N}


@dataclass
class SearchJob:
    env: str
    algos: list[str]
    out: Path
    data: str | None = None
    split: str = "test"
    limit: int | None = None
    backend: str = "transformers"
    model: str | None = None
    base_url: str | None = None
    critic: str = "self-eval"
    reward_mode: str = "none"
    max_steps: int = 6
    search: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    resume: bool = True
    viewer: bool = True


def run_job(job: SearchJob) -> list[RunSummary]:
    """Load tasks, env, backend and critic once; search with each algorithm; print the table."""
    from mcts_agent import envs
    from mcts_agent.critics import make_critic
    from mcts_agent.llm import load_backend

    configs = [SearchConfig.from_dict({**job.search, "algo": a}) for a in job.algos]  # validate before loading
    check_out_dir(job.out, [c.algo.value for c in configs])
    for cfg in configs:
        check_fresh(job.out / cfg.algo.value, job.resume)
    tasks = envs.load_tasks(job.env, path=job.data, split=job.split, limit=job.limit, seed=job.seed)
    env = envs.make(job.env, max_steps=job.max_steps, reward_mode=job.reward_mode)
    if any(cfg.algo in NEEDS_CRITIC for cfg in configs):  # a bad critic name or option fails before the model loads
        make_critic(job.critic, ScriptedBackend(lambda prompt, i: ""), env)
    kwargs = {"base_url": job.base_url} if job.base_url else {}
    policy = load_backend(job.backend, job.model, **kwargs)
    summaries = []
    try:
        for cfg in configs:
            critic = make_critic(job.critic, policy, env) if cfg.algo in NEEDS_CRITIC else None
            out_dir = job.out / cfg.algo.value
            bar = tqdm(total=len(tasks), desc=f"{cfg.algo.value:>6}", unit="task", disable=common.quiet())

            def progress(done: int, total: int, bar: tqdm = bar) -> None:
                bar.n = done
                bar.refresh()

            summary = run_tasks(tasks, env, policy, cfg, out_dir, critic, env_id=job.env, resume=job.resume,
                                progress=progress)
            bar.close()
            if job.viewer:
                _write_viewer(out_dir)
            summaries.append(summary)
    finally:
        policy.close()
    print_table(summaries)
    return summaries


def check_out_dir(out: Path, algos: list[str]) -> None:
    """Refuse an output path that is (or lies under) a file, before any model is loaded."""
    from mcts_agent.errors import ConfigError

    for p in [out / a for a in algos] + [out, *out.parents]:
        if p.exists() and not p.is_dir():
            raise ConfigError(f"--out {out}: '{p}' is a file, not a directory; choose another --out")


def _write_viewer(out_dir: Path) -> None:
    from mcts_agent.export.viewer import write_viewer
    from mcts_agent.io import load_trees

    write_viewer(load_trees(out_dir / "trees.jsonl"), out_dir / "viewer.html", title=f"mcts-agent: {out_dir}")


def print_table(summaries: list[RunSummary]) -> None:
    table = Table(title="search results")
    for col in ("algo", "tasks", "accuracy", "95% CI", "tokens/task", "seconds", "output"):
        table.add_column(col)
    for s in summaries:
        table.add_row(s.algo, str(s.tasks), f"{s.accuracy:.1%}", f"[{s.ci95[0]:.1%}, {s.ci95[1]:.1%}]",
                      f"{s.tokens_per_task:.0f}", f"{s.seconds:.1f}", s.out_dir)
    common.console().print(table)

"""The work behind ``mcts-agent search`` (kept apart from option parsing)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from tqdm import tqdm

from mcts_agent.cli import common
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.llm.spec import BackendSpec
from mcts_agent.runner import RunSummary, check_fresh, check_settings, run_settings, run_tasks
from mcts_agent.search import SearchConfig


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class SearchJob:
    """One ``mcts-agent search``: which tasks, which algorithms, where to write (the CLI's options)."""

    env: str = _opt(..., "Environment, e.g. math/gsm8k, code/mbpp, tool/bfcl-simple_python, textcraft "
                         "(`mcts-agent envs` lists them).")
    algos: list[str] = field(default_factory=lambda: ["mcts"], metadata={
        "help": "Search algorithm; repeat to compare several on the same tasks: mcts | greedy | bon | sc | beam."})
    out: Path = _opt(Path("runs/search"), "Output directory (one sub-folder per algorithm).")
    data: str | None = _opt(None, "Task file (JSONL), folder with {split}.jsonl, or a `datasets` id; env default if omitted.")
    split: str = _opt("test", "Dataset split.")
    limit: int | None = _opt(None, "Search only the first N tasks (in file order; see --task-seed).")
    task_seed: int | None = _opt(None, "Shuffle the tasks with this seed before --limit, to search a random sample "
                                       "(generated envs such as math/arithmetic: the seed that generates them).")
    critic: str = _opt("self-eval", "Critic for MCTS, beam and best-of-N: self-eval | self-eval-turn (read off the policy's "
                                    "cache: --fused-eval) | verifier | rollout | judge | none "
                                    "| prm:DIR or value:DIR (trained by train-critic) "
                                    "| an ensemble such as self-eval:0.5,verifier:0.5.")
    reward_mode: str = _opt("none", "none (evaluation: gold never reaches search) | outcome (training).")
    max_steps: int | None = _opt(None, "Step budget of an episode (ends it as truncated); the env's default if omitted.")
    resume: bool = _opt(True, "Continue a killed or finished run in --out (same settings only; see --extend).")
    extend: bool = _opt(False, "Resume a run whose settings differ: finished tasks keep their trees, the rest are "
                               "searched with the new settings (run.json records both).")
    viewer: bool = _opt(True, "Write viewer.html beside the trees.")
    policy: BackendSpec = field(default_factory=BackendSpec)
    search: dict[str, Any] = field(default_factory=dict)


def run_job(job: SearchJob) -> list[RunSummary]:
    """Load tasks, env, backend and critic once; search with each algorithm; print the table."""
    from mcts_agent import envs
    from mcts_agent.critics import make_critic

    # Everything that can be wrong with the input is checked before a model loads.
    configs = [SearchConfig.from_dict({**job.search, "algo": a}) for a in job.algos]
    check_out_dir(job.out, [c.algo.value for c in configs])
    for cfg in configs:
        check_fresh(job.out / cfg.algo.value, job.resume)
        check_settings(job.out / cfg.algo.value, run_settings(cfg, job.env, _settings(job, cfg)), extend=job.extend)
    tasks = envs.load_tasks(job.env, path=job.data, split=job.split, limit=job.limit, seed=job.task_seed)
    env_kwargs = {"max_steps": job.max_steps} if job.max_steps is not None else {}
    env = envs.make(job.env, reward_mode=job.reward_mode, **env_kwargs)
    if any(cfg.algo.needs_critic for cfg in configs):
        make_critic(job.critic, ScriptedBackend(lambda prompt, i: ""), env)
    with contextlib.ExitStack() as stack:
        if job.policy.replicas or any(cfg.env_executor == "ray" for cfg in configs):  # one connection for every algo
            from mcts_agent.ray_executor import ray_session

            stack.enter_context(ray_session(configs[0].ray))
        summaries = _search_all(job, configs, tasks, env)
    print_table(summaries)
    return summaries


def _search_all(job: SearchJob, configs: list[SearchConfig], tasks: list, env: Any) -> list[RunSummary]:
    from mcts_agent.critics import make_critic

    policy = job.policy.load()
    summaries = []
    try:
        for cfg in configs:
            critic = make_critic(job.critic, policy, env) if cfg.algo.needs_critic else None
            out_dir = job.out / cfg.algo.value
            bar = tqdm(total=len(tasks), desc=f"{cfg.algo.value:>6}", unit="task", disable=common.quiet())

            def progress(done: int, total: int, bar: tqdm = bar) -> None:
                bar.n = done
                bar.refresh()

            summary = run_tasks(tasks, env, policy, cfg, out_dir, critic, env_id=job.env, resume=job.resume,
                                extend=job.extend, settings=_settings(job, cfg), progress=progress)
            bar.close()
            if job.viewer:
                _write_viewer(out_dir)
            summaries.append(summary)
    finally:
        policy.close()
    return summaries


def _settings(job: SearchJob, cfg: SearchConfig) -> dict[str, Any]:
    """What besides the search config decides this run's trees (a resumed run must match it)."""
    return {"critic": job.critic if cfg.algo.needs_critic else None, "reward_mode": job.reward_mode,
            "max_steps": job.max_steps, "backend": job.policy.backend, "model": job.policy.model}


def check_out_dir(out: Path, algos: list[str]) -> None:
    """Refuse an output path that is (or lies under) a file, before any model is loaded."""
    from mcts_agent.errors import ConfigError
    from mcts_agent.io import file_in_the_way

    for a in algos:
        blocking = file_in_the_way(out / a)
        if blocking is not None:
            raise ConfigError(f"--out {out}: '{blocking}' is a file, not a directory; choose another --out")


def _write_viewer(out_dir: Path) -> None:
    from mcts_agent.export.viewer import write_viewer
    from mcts_agent.io import load_trees

    write_viewer(load_trees(out_dir / "trees.jsonl"), out_dir / "viewer.html")


def print_table(summaries: list[RunSummary]) -> None:
    table = Table(title="search results")
    for col in ("algo", "tasks", "accuracy", "95% CI", "tokens/task", "seconds", "output"):
        table.add_column(col)
    for s in summaries:
        table.add_row(s.algo, str(s.tasks), f"{s.accuracy:.1%}", f"[{s.ci95[0]:.1%}, {s.ci95[1]:.1%}]",
                      f"{s.tokens_per_task:.0f}", f"{s.seconds:.1f}", s.out_dir)
    common.console().print(table)

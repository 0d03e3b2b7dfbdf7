"""``mcts-agent swe``: generate SWE-bench-format instances, prepare their checkouts, grade patches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from mcts_agent.cli.common import quiet, user_errors
from mcts_agent.cli.options import command, option_params
from mcts_agent.errors import ConfigError

swe_app = typer.Typer(help="Software-engineering tasks: generate instances, prepare checkouts, grade patches.",
                      no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(swe_app, name="swe")


def _generate(**values: Any) -> None:
    """Inject bugs into a real project; keep those some of its tests catch (SWE-bench format, JSONL)."""
    from tqdm import tqdm

    from mcts_agent.envs.swe.config import GenerateConfig
    from mcts_agent.envs.swe.generate import generate

    with user_errors():
        cfg = GenerateConfig(**values)
        if Path(cfg.out).exists():
            raise ConfigError(f"--out {cfg.out!r} exists; choose a new file (nothing was written)")
        bar = tqdm(total=cfg.max_candidates, desc="candidates", unit="site", disable=quiet())

        def progress(tried: int, kept: int) -> None:
            bar.n = tried
            bar.set_postfix(instances=kept)
            bar.refresh()

        report = generate(cfg, progress)
        bar.close()
    typer.echo(json.dumps(report.to_dict()))


def _generate_options() -> list[Any]:
    from mcts_agent.envs.swe.config import GenerateConfig  # light: no libcst, no sandbox

    return option_params(GenerateConfig)


swe_app.command("generate")(command(_generate, _generate_options()))


@swe_app.command("prepare")
def prepare(data: str = typer.Option(..., "--data", help="instance file (.json / .jsonl, SWE-bench format)"),
            repos_dir: str = typer.Option("swe_repos", "--repos-dir", help="folder for the git checkouts")) -> None:
    """Build the checkouts and base commits of generated instances (same commit ids on every machine)."""
    from mcts_agent.envs.swe.instances import load_instances
    from mcts_agent.envs.swe.projects import prepare_instances

    with user_errors():
        instances = load_instances(data, check=False)
        repos = prepare_instances([i for i in instances if i.extra.get("project")], repos_dir)
        load_instances(data, repos_dir=repos_dir)  # every instance now has its checkout and commit
    typer.echo(f"{len(instances)} instances ready in {sorted(set(repos)) or repos_dir}")


@swe_app.command("grade")
def grade_cmd(data: str = typer.Option(..., "--data", help="instance file (.json / .jsonl, SWE-bench format)"),
              predictions: Optional[str] = typer.Option(
                  None, "--predictions", help="JSONL of {instance_id, model_patch} (SWE-bench's prediction format)"),
              gold: bool = typer.Option(False, "--gold", help="grade each instance's gold patch (checks the instances)"),
              repos_dir: Optional[str] = typer.Option(None, "--repos-dir", help="folder holding the git checkouts"),
              out: Optional[str] = typer.Option(None, "--out", help="write the per-instance report here (JSON)"),
              log_dir: Optional[str] = typer.Option(None, "--log-dir",
                                                    help="write each run's log in SWE-bench's eval-log format")) -> None:
    """Grade patches as SWE-bench does (model patch, test patch, FAIL_TO_PASS and PASS_TO_PASS in the sandbox)."""
    from tqdm import tqdm

    from mcts_agent import envs
    from mcts_agent.envs.swe.grading import swebench_log

    with user_errors():
        if gold == (predictions is not None):
            raise ConfigError("give exactly one of --predictions FILE and --gold")
        tasks = envs.load_tasks("swe/bench", data, repos_dir=repos_dir)
        patches = _predictions(predictions, {t.id for t in tasks}) if predictions else None
        env = envs.make("swe/bench", tasks=tasks)
        reports = {}
        try:
            for task in tqdm(tasks, desc="grading", unit="instance", disable=quiet()):
                if patches is not None and task.id not in patches:
                    continue
                patch = json.loads(task.answer or "{}")["patch"] if patches is None else patches[task.id]
                report = env.grade(task, patch)
                reports[task.id] = report.to_dict()
                if log_dir:
                    Path(log_dir, task.id).mkdir(parents=True, exist_ok=True)
                    Path(log_dir, task.id, "test_output.txt").write_text(swebench_log(report))
        finally:
            env.close()
    resolved = sum(r["resolved"] for r in reports.values())
    summary = {"graded": len(reports), "resolved": resolved}
    if out:
        from mcts_agent.io import atomic_write_json

        atomic_write_json(out, {"summary": summary, "instances": reports})
    typer.echo(json.dumps(summary))


def _predictions(path: str, known: set[str]) -> dict[str, str]:
    """``{instance_id: model_patch}`` from SWE-bench's prediction format (JSONL or a JSON list)."""
    from mcts_agent.envs.loading import read_records

    out = {}
    for n, rec in enumerate(read_records(path), 1):
        if not isinstance(rec.get("instance_id"), str) or not isinstance(rec.get("model_patch"), str):
            raise ConfigError(f"{path}, record {n}: expected {{\"instance_id\": str, \"model_patch\": str}}")
        if rec["instance_id"] not in known:
            raise ConfigError(f"{path}, record {n}: unknown instance_id {rec['instance_id']!r}")
        out[rec["instance_id"]] = rec["model_patch"]
    return out

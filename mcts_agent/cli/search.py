"""``mcts-agent search``: run MCTS or a baseline on a benchmark, write trees and results.

The options are derived from ``SearchJob``, ``BackendSpec`` and ``SearchConfig``: a new
config field is a new option, with its default and help, without touching this file.
"""

from __future__ import annotations

from typing import Any

import typer

from mcts_agent.cli import common
from mcts_agent.cli.options import command, option_params, pick
from mcts_agent.cli.search_run import SearchJob
from mcts_agent.llm.spec import BackendSpec
from mcts_agent.search import SearchConfig


def search(**options: Any) -> None:
    """Search a benchmark with each --algo; print accuracy, tokens and time side by side."""
    with common.user_errors():
        from mcts_agent.cli.search_run import run_job

        job = SearchJob(**{**pick(SearchJob, options), "policy": BackendSpec(**pick(BackendSpec, options)),
                           "search": pick(SearchConfig, options)})
        run_job(job)


command(search,
        option_params(SearchJob, skip=("policy", "search"), names={"algos": ("--algo",)}, panel="Run"),
        option_params(BackendSpec, skip=("options",), panel="Model"),
        option_params(SearchConfig, skip=("algo",), panel="Search (SearchConfig)"))


def register(app: typer.Typer) -> None:
    app.command("search")(search)

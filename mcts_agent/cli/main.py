"""The ``mcts-agent`` command line. Each command lives in its own module under ``cli/``."""

from __future__ import annotations

import importlib
import logging

import typer

from mcts_agent.cli import options  # noqa: F401 - flags show no "<bool>" in --help

app = typer.Typer(
    name="mcts-agent",
    help="Search-centric LLM agents: batched MCTS, critic LLMs, step-level DPO.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Modules that add commands with ``register(app)``; a new command is one more entry here.
COMMAND_MODULES = (
    "mcts_agent.cli.models",
    "mcts_agent.cli.generate",
    "mcts_agent.cli.search",
    "mcts_agent.cli.iterate",
    "mcts_agent.cli.critic",
    "mcts_agent.cli.export",
    "mcts_agent.cli.envs_cmd",
    "mcts_agent.cli.swe",
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors; no progress bars."),
) -> None:
    """mcts-agent: run search agents on benchmarks, export trees, train with DPO."""
    from mcts_agent.cli import common

    common.set_verbosity(verbose=verbose, quiet=quiet)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()

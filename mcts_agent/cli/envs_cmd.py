"""``mcts-agent envs``: the registered environments, their Gymnasium ids and what they are."""

from __future__ import annotations

import typer
from rich.table import Table

from mcts_agent.cli import common


def list_envs() -> None:
    """List every registered environment (short name, gymnasium id, description)."""
    from mcts_agent import envs

    table = Table(title="environments")
    for col in ("name", "gymnasium id", "description"):
        table.add_column(col)
    for name in envs.list_envs():
        e = envs.get_entry(name)
        table.add_row(name, e.gym_id, e.description)
    common.console().print(table)


def register(app: typer.Typer) -> None:
    app.command("envs")(list_envs)

"""Shared CLI plumbing: verbosity, progress bars, turning our errors into clean exits."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Iterator

import typer

from mcts_agent.errors import MctsAgentError

if TYPE_CHECKING:
    from rich.console import Console

_QUIET = False


def set_verbosity(*, verbose: bool, quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=level, force=True)


def quiet() -> bool:
    """True when progress bars and chatter should be suppressed."""
    return _QUIET


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a framework error as one clear line and exit with status 2."""
    try:
        yield
    except MctsAgentError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(2)


def console() -> "Console":
    """A rich console; in logs and pipes it is 240 columns wide so tables are not squeezed."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=240)


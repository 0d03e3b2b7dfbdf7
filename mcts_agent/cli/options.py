"""CLI options derived from config dataclasses, so each setting has one definition.

A field becomes ``--field-name`` with the field's default, type and ``metadata["help"]``;
a bool becomes a ``--x/--no-x`` flag, an enum a choice, ``T | None`` an optional value.
A command is a plain ``def cmd(**kwargs)`` whose signature is built here for typer.
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, Field, fields
from typing import Any, Callable, Iterable, get_type_hints

import typer
import typer.core


def option_params(cls: type, *, skip: Iterable[str] = (), names: dict[str, tuple[str, ...]] | None = None,
                  panel: str | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per field of dataclass ``cls`` (less ``skip``), each a ``typer.Option``.

    ``names`` gives a field other option names (aliases, short flags); ``panel`` groups the
    options under a heading in ``--help``.
    """
    hints, names = get_type_hints(cls), names or {}
    params = []
    for f in fields(cls):
        if f.name in skip or f.name.startswith("_"):
            continue
        flag = "--" + f.name.replace("_", "-")
        opts = names.get(f.name, (flag,))
        if hints[f.name] is bool:
            opts = tuple(f"{o}/--no-{o[2:]}" if o.startswith("--") else o for o in opts)
        option = typer.Option(_default(f), *opts, help=f.metadata.get("help", ""), rich_help_panel=panel)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=hints[f.name]))
    return params


def command(fn: Callable[..., Any], *groups: list[inspect.Parameter]) -> Callable[..., Any]:
    """Give ``fn(**kwargs)`` the signature typer reads: the parameters of ``groups``, in order."""
    params = [p for group in groups for p in group]
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in params}
    return fn


def pick(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that are fields of dataclass ``cls``."""
    own = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in own}


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls``."""
    return _default(next(f for f in fields(cls) if f.name == name))


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return ...  # required


def _flags_without_metavar() -> None:
    """typer 0.29 prints ``<bool>`` after flags that take no value (``--json <bool>``); show nothing."""
    original = typer.core.TyperOption.display_type_rich

    def display_type_rich(self: typer.core.TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else original(self, ctx)

    typer.core.TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_metavar()

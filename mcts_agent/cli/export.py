"""``mcts-agent export`` and ``mcts-agent view``: search trees to GraphML, JSON, HTML, statistics."""

from __future__ import annotations

import enum
import json
import webbrowser
from pathlib import Path
from typing import Callable, NoReturn

import typer

from mcts_agent.cli import common
from mcts_agent.io import file_in_the_way
from mcts_agent.tree import Tree


class Format(str, enum.Enum):
    graphml = "graphml"
    json = "json"
    html = "html"
    stats = "stats"


_SUFFIX = {Format.graphml: ".graphml", Format.json: ".json", Format.html: ".html", Format.stats: ".stats.json"}
_BY_SUFFIX = {".graphml": Format.graphml, ".xml": Format.graphml, ".json": Format.json, ".html": Format.html, ".htm": Format.html}

TREES_ARG = typer.Argument(..., help="A trees.jsonl file written by a search run (one tree per line).", show_default=False)
TREE_OPT = typer.Option([], "--tree", "-t", help="Only this tree (tree id or task id); repeat for several.")


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def _load(path: Path, only: list[str]) -> list[Tree]:
    """Read the trees (optionally only some), with clear errors for missing or empty files."""
    from mcts_agent.io import iter_trees

    if not path.exists():
        _fail(f"trees file '{path}' does not exist")
    if not path.is_file():
        _fail(f"trees file '{path}' is not a regular file")
    wanted = set(only)
    try:
        with common.user_errors():  # TreeFormatError names the file and line
            trees = [t for t in iter_trees(path) if not wanted or t.tree_id in wanted or t.task_id in wanted]
    except OSError as e:
        _fail(f"cannot read trees file '{path}': {e.strerror or e}")
    if wanted:
        missing = wanted - {t.tree_id for t in trees} - {t.task_id for t in trees}
        if missing:
            _fail(f"no tree with id or task id {sorted(missing)} in '{path}'")
    if not trees:
        _fail(f"trees file '{path}' holds no trees")
    return trees


def _check_out(out: Path, source: Path) -> None:
    if out.exists() and out.resolve() == source.resolve():
        _fail(f"output '{out}' is the input file; choose another --out")
    if out.is_dir():
        _fail(f"output '{out}' is a directory; expected a file path")
    blocking = file_in_the_way(out.parent)
    if blocking is not None:
        _fail(f"output '{out}': '{blocking}' is a file, not a directory; choose another --out")


def _write(out: Path, what: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except OSError as e:
        _fail(f"cannot write {what} to '{out}': {e.strerror or e}")


def export(
    trees_file: Path = TREES_ARG,
    fmt: Format | None = typer.Option(
        None, "--format", "-f", case_sensitive=False,
        help="graphml (networkx/Gephi), json (array of trees), html (offline viewer), stats (JSON statistics). "
             "Default: from the --out suffix.",
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output file. Default: the input name with the format's suffix."),
    only: list[str] = TREE_OPT,
    title: str | None = typer.Option(None, "--title", help="Page title for --format html."),
) -> None:
    """Export search trees to GraphML, JSON, an offline HTML viewer, or statistics.

    Outputs are replaced atomically: an existing file is never left half-written.
    """
    if fmt is None:
        if out is None or out.suffix.lower() not in _BY_SUFFIX:
            _fail("give --format graphml|json|html|stats (or an --out ending in .graphml, .json or .html)")
        fmt = _BY_SUFFIX[out.suffix.lower()]
    out = out or trees_file.with_suffix(_SUFFIX[fmt])
    _check_out(out, trees_file)
    trees = _load(trees_file, only)
    if fmt is Format.graphml:
        from mcts_agent.export.graph import write_graphml

        _write(out, "GraphML", lambda: write_graphml(trees[0] if len(trees) == 1 else trees, out))
    elif fmt is Format.json:
        from mcts_agent.io import atomic_write_json

        _write(out, "JSON", lambda: atomic_write_json(out, [t.to_dict() for t in trees], indent=None))
    elif fmt is Format.html:
        from mcts_agent.export.viewer import write_viewer

        _write(out, "the viewer", lambda: write_viewer(trees, out, title=title))
    else:
        from mcts_agent.export.analysis import aggregate_stats
        from mcts_agent.io import atomic_write_json

        stats = aggregate_stats(trees, per_tree=True)
        _write(out, "statistics", lambda: atomic_write_json(out, stats))
        if not common.quiet():
            _print_stats(stats)
    typer.echo(f"wrote {out} ({fmt.value}, {len(trees)} tree{'s' if len(trees) != 1 else ''})")


def view(
    trees_file: Path = TREES_ARG,
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write the page. Default: the input name with .html."),
    open_: bool = typer.Option(False, "--open/--no-open", help="Open the page in the default web browser."),
    only: list[str] = TREE_OPT,
    title: str | None = typer.Option(None, "--title", help="Page title. Default: the env and the number of trees."),
) -> None:
    """Write a self-contained offline HTML viewer for search trees and print its path."""
    from mcts_agent.export.viewer import write_viewer

    out = out or trees_file.with_suffix(".html")
    _check_out(out, trees_file)
    trees = _load(trees_file, only)
    _write(out, "the viewer", lambda: write_viewer(trees, out, title=title))
    typer.echo(str(out))
    if open_ and not webbrowser.open(out.resolve().as_uri()):
        typer.secho(f"could not open a browser; open {out.resolve().as_uri()} yourself", err=True)


def _print_stats(stats: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{stats['trees']} trees")
    for col in ("task", "answer", "correct", "nodes", "depth", "branching", "terminals", "answers", "model calls", "gen tokens"):
        table.add_column(col, justify="left" if col in ("task", "answer") else "right")
    for r in stats["per_tree"][:50]:
        table.add_row(
            r["task_id"], str(r["answer"]), {True: "yes", False: "no", None: "-"}[r["correct"]], str(r["nodes"]),
            str(r["max_depth"]), f"{r['branching_mean']:.2f}", str(r["terminals"]), str(r["distinct_answers"]),
            _num(r["stats"].get("model_calls")), _num(r["stats"].get("generated_tokens")),
        )
    console = common.console()
    console.print(table)
    if len(stats["per_tree"]) > 50:
        console.print(f"... and {len(stats['per_tree']) - 50} more trees (all are in the JSON file)")
    acc = "-" if stats["accuracy"] is None else f"{stats['accuracy']:.3f} ({stats['correct']}/{stats['correct_known']})"
    console.print(
        f"total: {stats['nodes']:,} nodes, max depth {stats['max_depth']}, branching {stats['branching_mean']:.2f}, "
        f"terminals {stats['terminals']:,}, accuracy {acc}, totals {json.dumps(stats['stats'])}"
    )


def _num(v: object) -> str:
    return "-" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``view`` to the ``mcts-agent`` command line."""
    app.command("export")(export)
    app.command("view")(view)

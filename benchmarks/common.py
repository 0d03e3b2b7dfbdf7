"""Shared pieces of the benchmark scripts: JSON out, printed tables, thread settings."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Sequence

from rich.table import Table

from mcts_agent.cli.common import console
from mcts_agent.io import atomic_write_json


def machine() -> dict[str, Any]:
    import os

    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def write_result(path: str | Path, name: str, config: dict[str, Any], rows: list[dict[str, Any]],
                 **extra: Any) -> dict[str, Any]:
    """Write ``{benchmark, machine, config, rows, ...}`` atomically and return it."""
    doc = {"benchmark": name, "machine": machine(), "config": config, "rows": rows, **extra}
    atomic_write_json(path, doc)
    return doc


def paired_bootstrap(diffs: Sequence[float], draws: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-task paired differences and its paired-bootstrap 95% interval."""
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    if not len(d):
        raise ValueError("paired_bootstrap needs at least one paired difference")
    boots = d[np.random.default_rng(seed).integers(0, len(d), size=(draws, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def print_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    columns = list(columns or (rows[0].keys() if rows else []))
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[_fmt(r.get(c)) for c in columns])
    console().print(table)


def print_figures(title: str, figures: dict[str, Any]) -> None:
    """One benchmark's named figures as a two-column table."""
    print_table(title, [{"figure": k, "value": v} for k, v in figures.items()])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return "" if v is None else str(v)

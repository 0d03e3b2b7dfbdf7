"""Reading task records from a JSONL file, a folder of ``{split}.jsonl`` files, or a ``datasets`` id."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Sequence, TypeVar

from mcts_agent.errors import EnvError

T = TypeVar("T")


def read_records(source: str | os.PathLike[str] | None, split: str = "test", *,
                 subset: str | None = None) -> list[dict[str, Any]]:
    """Records (dicts) from ``source``.

    ``source`` is a ``.jsonl``/``.json`` file, a folder holding ``{split}.jsonl``, or a
    Hugging Face ``datasets`` id (``subset`` is its config name, e.g. "main" for gsm8k).
    """
    if source is None or source == "":
        raise EnvError(f"no data given: expected a JSONL file, a folder with {split}.jsonl, or a datasets hub id")
    path = Path(os.path.expanduser(os.fspath(source)))
    if path.is_dir():
        file = path / f"{split}.jsonl"
        if not file.is_file():
            found = sorted(p.name for p in path.glob("*.json*")) or "no .jsonl files"
            raise EnvError(f"folder {str(path)!r} has no {file.name!r} for split {split!r}; found: {found}")
        return _read_json_file(file)
    if path.is_file():
        return _read_json_file(path)
    if path.suffix in (".jsonl", ".json") or os.fspath(source).startswith((".", "/", "~")):
        raise EnvError(f"data file {os.fspath(source)!r} does not exist; expected a JSONL file, "
                       f"a folder with {split}.jsonl, or a datasets hub id")
    return _load_hub(os.fspath(source), split, subset)


def _read_json_file(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise EnvError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise EnvError(f"{path} must hold a JSON list of objects")
        return data
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise EnvError(f"{path}, line {n}: not valid JSON ({e.msg}); expected one JSON object per line") from None
        if not isinstance(rec, dict):
            raise EnvError(f"{path}, line {n}: expected a JSON object, got {type(rec).__name__}")
        records.append(rec)
    return records


def _load_hub(name: str, split: str, subset: str | None) -> list[dict[str, Any]]:
    from mcts_agent import hub

    if not hub.dataset_cached(name) and not hub.hub_reachable():
        raise EnvError(f"{name!r} is not a local file or folder, and no datasets hub id of that name is cached while "
                       f"the Hugging Face Hub cannot be reached (offline); expected a JSONL file, a folder with "
                       f"{split}.jsonl, or a cached datasets id")
    try:
        import datasets

        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as e:  # noqa: BLE001 - offline, unknown id, bad split: all one user error
        raise EnvError(f"{name!r} is not a local file or folder, and datasets.load_dataset({name!r}, {subset!r}, "
                       f"split={split!r}) failed: {type(e).__name__}: {e}") from e
    return [dict(r) for r in ds]


def select(items: Sequence[T], limit: int | None = None, seed: int | None = None) -> list[tuple[int, T]]:
    """(original index, item) pairs: shuffled with ``seed`` if given, then the first ``limit``."""
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise EnvError(f"limit must be a non-negative integer or None, got {limit!r}")
    indexed = list(enumerate(items))
    if seed is not None:
        random.Random(seed).shuffle(indexed)
    return indexed if limit is None else indexed[:limit]


def require_field(record: dict[str, Any], names: Sequence[str], where: str) -> str:
    """The first of ``names`` present in ``record`` as a string, or a clear error."""
    for name in names:
        if record.get(name) is not None:
            return str(record[name])
    raise EnvError(f"{where}: expected a field {' or '.join(map(repr, names))}, got fields {sorted(record)}")

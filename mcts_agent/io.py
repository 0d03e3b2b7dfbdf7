"""Trees and results on disk, written so a crash never leaves a half-written file.

* Whole-file writes (:func:`atomic_write_text`, :func:`atomic_write_json`, :func:`save_trees`)
  go to a temp file in the same directory, are fsynced, then renamed over the target:
  readers see the old file or the new one, never a mix.
* :func:`append_tree` adds one line to ``trees.jsonl`` with a single write + flush + fsync,
  so a killed run loses at most the tree in flight. A torn last line left by such a kill is
  dropped on the next append (and skipped, with a warning, by :func:`load_trees`).
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import numbers
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from mcts_agent.errors import TreeFormatError
from mcts_agent.tree import Tree

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


# ----- atomic whole-file writes -------------------------------------------------------------
@contextlib.contextmanager
def atomic_open(path: PathLike, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """Open a temp file beside ``path`` for writing; on success fsync it and rename it over ``path``.

    If the body raises, the temp file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if target.exists():  # keep the permissions of the file being replaced
            with contextlib.suppress(OSError):
                os.chmod(tmp, target.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text`` atomically (temp file, fsync, rename)."""
    with atomic_open(path, encoding=encoding) as f:
        f.write(text)


def atomic_write_json(path: PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Replace ``path`` with ``obj`` as JSON atomically.

    NaN/inf (not valid JSON) and objects JSON cannot hold raise before anything is written;
    pass ``json_safe(obj)`` to turn them into null/strings instead.
    """
    try:
        text = json.dumps(obj, ensure_ascii=False, indent=indent, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise type(e)(f"cannot write {os.fspath(path)!r} as JSON: {e}") from e
    atomic_write_text(path, text + "\n")


def file_in_the_way(directory: PathLike) -> Path | None:
    """The first of ``directory`` and its parents that exists but is not a directory, else None
    (a path under a regular file can never be created)."""
    d = Path(directory)
    return next((p for p in (d, *d.parents) if p.exists() and not p.is_dir()), None)


def json_safe(v: Any) -> Any:
    """A copy that strict JSON accepts: non-finite floats become None, numpy-style numbers
    Python numbers, enums their value, tuples lists, other objects their ``str``."""
    if isinstance(v, enum.Enum):
        v = v.value
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return str(v)


# ----- trees.jsonl ------------------------------------------------------------------------
def save_trees(path: PathLike, trees: Iterable[Tree]) -> int:
    """Write ``trees`` to ``path`` (one JSON tree per line), replacing it atomically.

    Returns the number of trees written.
    """
    count = 0
    with atomic_open(path) as f:
        for tree in trees:
            f.write(_line(tree))
            count += 1
    return count


def append_tree(path: PathLike, tree: Tree) -> None:
    """Append one tree as one line: a single write, then flush and fsync.

    A torn last line (no trailing newline, not a valid tree: a write cut by a crash) is
    truncated away first, so it cannot swallow the new line.
    """
    line = _line(tree).encode("utf-8")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "ab+") as f:
        _repair_tail(f, target)
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def iter_trees(path: PathLike) -> Iterator[Tree]:
    """Yield the trees of a ``trees.jsonl`` file in order, one line at a time.

    Raises :class:`TreeFormatError` naming the file and line for a corrupted line. A torn
    last line (no trailing newline: an append cut by a crash) is skipped with a warning.
    Blank lines are ignored. A missing file raises ``FileNotFoundError``.
    """
    p = Path(path)
    with open(p, "rb") as f:
        lineno = 0
        for raw in f:
            lineno += 1
            if not raw.strip():
                continue
            try:
                tree = Tree.from_json(raw.decode("utf-8"))
            except (UnicodeDecodeError, TreeFormatError) as e:
                if not raw.endswith(b"\n") and _is_torn(raw):
                    log.warning("%s:%d: skipping a torn last line (a write cut short by a crash?)", p, lineno)
                    return
                raise TreeFormatError(f"{p}:{lineno}: {e}") from e
            yield tree


def load_trees(path: PathLike) -> list[Tree]:
    """All trees of a ``trees.jsonl`` file (see :func:`iter_trees` for errors)."""
    return list(iter_trees(path))


# ----- helpers ------------------------------------------------------------------------------
def _line(tree: Tree) -> str:
    text = tree.to_json()
    if "\n" in text:  # json.dumps escapes newlines in strings; this would be a bug upstream
        raise TreeFormatError(f"tree {tree.tree_id!r} serialized to more than one line")
    return text + "\n"


def _is_torn(data: bytes) -> bool:
    """A last line that is not even complete JSON (rather than a complete but invalid tree)."""
    try:
        json.loads(data)
    except ValueError:
        return True
    return False


def _repair_tail(f: IO[bytes], path: Path) -> None:
    """Make sure the file opened in ``ab+`` mode ends with a newline before appending."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    start = _last_line_start(f, size)
    f.seek(start)
    tail = f.read()
    if _is_torn(tail):
        log.warning("%s: dropping a torn last line of %d bytes before appending", path, size - start)
        f.truncate(start)
    else:  # a complete line that only lacks its newline: keep it
        f.write(b"\n")


def _last_line_start(f: IO[bytes], size: int, chunk: int = 1 << 16) -> int:
    """Offset just after the last ``\\n`` in the file (0 if there is none)."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        f.seek(start)
        i = f.read(end - start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0


def _fsync_dir(directory: Path) -> None:
    """Persist a rename (POSIX); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_umask() -> int:
    """The process umask (read once at import: ``os.umask`` can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()

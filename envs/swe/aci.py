"""The agent-computer interface of SWE envs: strict actions, parsed exactly, run on a working copy.

One action per turn, written as a call with literal arguments (Python string syntax,
so triple quotes hold several lines):

* ``view("path")`` / ``view("path", start, end)``: the file's lines, numbered (a window of
  at most ``VIEW_LINES`` lines);
* ``search("text")`` / ``search("text", "dir_or_file")``: lines holding ``text`` (plain text,
  case-sensitive), as ``path:line: text``, at most ``MAX_HITS``;
* ``replace("path", "old", "new")``: replace ``old`` by ``new``; ``old`` must occur exactly once;
* ``create("path", "content")``: a new file (it must not exist yet);
* ``run_tests("tests/test_x.py", ...)``: run chosen tests (pytest ids or paths) in the sandbox;
  with no argument, the repository's whole visible suite;
* ``submit()``: end the episode; the answer is the patch made so far.

Paths are relative to the repository root and must stay inside it (no ``..``, no ``.git``,
no symlink that leads out). Anything else (not a call, an unknown name, wrong arguments,
a path outside the repository, an ``old`` that matches 0 or 2+ times) is answered with an
error observation and the episode goes on. Observations are capped at ``MAX_OBSERVATION``.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from typing import Any, Callable

ACTIONS = ("view", "search", "replace", "create", "run_tests", "submit")
VIEW_LINES = 80
MAX_HITS = 40
MAX_OBSERVATION = 3000
MAX_FILE_BYTES = 1 << 20
_SIGNATURES: dict[str, tuple[tuple[type, ...], int, int | None]] = {
    # name: (argument types in order, fewest arguments, most arguments or None for any number)
    "view": ((str, int, int), 1, 3),
    "search": ((str, str), 1, 2),
    "replace": ((str, str, str), 3, 3),
    "create": ((str, str), 2, 2),
    "run_tests": ((str,), 0, None),
    "submit": ((), 0, 0),
}


class ActionError(ValueError):
    """A malformed action: its message becomes the observation."""


@dataclass(frozen=True)
class Action:
    name: str
    args: tuple[Any, ...]


def parse_action(text: str) -> Action:
    """The action ``text`` names; raises ActionError saying what is wrong."""
    src = text.strip()
    if src.startswith("```"):  # a fenced action: the fence is no part of it
        src = src.strip("`").removeprefix("python").strip()
    if not src:
        raise ActionError(f"empty action; reply with one of: {', '.join(a + '(...)' for a in ACTIONS)}")
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError as e:
        raise ActionError(f"not a call with literal arguments ({e.msg}); e.g. view(\"setup.py\")") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ActionError(f"an action is one call such as view(\"path\"); got {src[:60]!r}")
    name = call.func.id
    if name not in _SIGNATURES:
        raise ActionError(f"unknown action {name!r}; actions: {', '.join(ACTIONS)}")
    if call.keywords:
        raise ActionError(f"{name}(): give arguments by position, not by keyword")
    try:
        args = tuple(ast.literal_eval(a) for a in call.args)
    except ValueError:
        raise ActionError(f"{name}(): arguments must be literal strings or numbers") from None
    types, low, high = _SIGNATURES[name]
    if len(args) < low or (high is not None and len(args) > high):
        want = f"{low}" if low == high else f"{low} to {high}" if high is not None else f"{low} or more"
        raise ActionError(f"{name}() takes {want} argument(s), got {len(args)}")
    for i, a in enumerate(args):
        want_type = types[min(i, len(types) - 1)]
        if not isinstance(a, want_type) or isinstance(a, bool):
            raise ActionError(f"{name}() argument {i + 1} must be a {want_type.__name__}, got {a!r:.60}")
    return Action(name, args)


def resolve(root: str, rel: str) -> str:
    """The absolute path of ``rel`` inside ``root``; ActionError if it leaves the repository."""
    if not rel or os.path.isabs(rel) or "\x00" in rel:
        raise ActionError(f"path must be relative to the repository root, got {rel!r}")
    parts = rel.replace("\\", "/").split("/")
    if ".." in parts or ".git" in parts:
        raise ActionError(f"path {rel!r} leaves the repository or enters .git")
    full = os.path.realpath(os.path.join(root, rel))
    real_root = os.path.realpath(root)
    if full != real_root and not full.startswith(real_root + os.sep):
        raise ActionError(f"path {rel!r} leads outside the repository")
    return full


def cap(text: str, limit: int = MAX_OBSERVATION) -> str:
    """``text`` cut to ``limit`` characters, the cut marked."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... {len(text) - limit} more characters cut]"


def _read(path: str, rel: str) -> str:
    if not os.path.isfile(path):
        raise ActionError(f"no file {rel!r}")
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise ActionError(f"{rel!r} is larger than {MAX_FILE_BYTES} bytes")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise ActionError(f"{rel!r} is not a UTF-8 text file") from None


def view(root: str, rel: str, start: int = 1, end: int | None = None) -> str:
    lines = _read(resolve(root, rel), rel).splitlines()
    if not lines:
        return f"{rel} is empty"
    start = max(1, start)
    end = min(len(lines), end if end is not None else start + VIEW_LINES - 1, start + VIEW_LINES - 1)
    if start > len(lines):
        raise ActionError(f"{rel} has {len(lines)} lines; start {start} is past the end")
    body = "\n".join(f"{n:>5} {lines[n - 1]}" for n in range(start, end + 1))
    more = f"\n[lines {end + 1}-{len(lines)} not shown]" if end < len(lines) else ""
    return f"{rel} (lines {start}-{end} of {len(lines)})\n{body}{more}"


def search(root: str, text: str, rel: str = ".") -> str:
    if not text:
        raise ActionError("search() needs non-empty text")
    base = resolve(root, rel) if rel != "." else os.path.realpath(root)
    files = [base] if os.path.isfile(base) else _files(base)
    hits, total = [], 0
    for path in files:
        if os.path.islink(path) or os.path.getsize(path) > MAX_FILE_BYTES:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                content = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(content.splitlines(), 1):
            if text in line:
                total += 1
                if len(hits) < MAX_HITS:
                    hits.append(f"{os.path.relpath(path, os.path.realpath(root))}:{n}: {line.strip()[:200]}")
    if not hits:
        return f"no line holds {text!r}"
    more = f"\n[{total - len(hits)} more matches not shown]" if total > len(hits) else ""
    return "\n".join(hits) + more


def _files(base: str) -> list[str]:
    out = []
    for d, dirs, names in os.walk(base):
        dirs[:] = sorted(x for x in dirs if x not in (".git", "__pycache__") and not x.endswith(".egg-info"))
        out += [os.path.join(d, n) for n in sorted(names)]
    return out


def replace_text(root: str, rel: str, old: str, new: str) -> str:
    path = resolve(root, rel)
    content = _read(path, rel)
    if not old:
        raise ActionError("replace() needs a non-empty old string")
    count = content.count(old)
    if count != 1:
        raise ActionError(f"old string occurs {count} times in {rel}; it must occur exactly once "
                          f"(copy it exactly, with more context to make it unique)")
    _write(path, content.replace(old, new, 1))
    return f"replaced 1 occurrence in {rel}"


def create(root: str, rel: str, content: str) -> str:
    path = resolve(root, rel)
    if os.path.lexists(path):
        raise ActionError(f"{rel!r} exists already; use replace() to change it")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write(path, content)
    return f"created {rel} ({len(content.splitlines())} lines)"


def _write(path: str, content: str) -> None:
    if len(content.encode("utf-8")) > MAX_FILE_BYTES:
        raise ActionError(f"a file may hold at most {MAX_FILE_BYTES} bytes")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)


EDITS: dict[str, Callable[..., str]] = {"replace": replace_text, "create": create}
READS: dict[str, Callable[..., str]] = {"view": view, "search": search}

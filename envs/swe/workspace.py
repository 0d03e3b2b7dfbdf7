"""Working copies of a repository at a base commit, restored to any patch on demand.

An episode's state is the patch against ``base_commit`` (text). To act in a state, a
working copy is reset to the base commit and the patch applied (``git apply``); after the
action, the new state is the copy's diff against the base. ``Workspace`` keeps up to
``capacity`` copies per (repo, commit), each used by one thread at a time, and hands out
one already holding the asked-for patch where it can (a child acting right after its
parent finds the parent's copy as it was left), so most steps restore nothing.

Copies are ``git clone --shared`` clones in a private temp folder: the user's checkout is
only read. Diffs leave out ``*.egg-info`` and ``__pycache__``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from typing import Iterator

from mcts_agent.errors import EnvError

EXCLUDES = (":(exclude,glob)**/*.egg-info/**", ":(exclude,glob)**/__pycache__/**", ":(exclude,glob)**/*.pyc")
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "mcts-agent",
            "GIT_AUTHOR_EMAIL": "mcts-agent@localhost", "GIT_COMMITTER_NAME": "mcts-agent",
            "GIT_COMMITTER_EMAIL": "mcts-agent@localhost"}


def git(repo: str, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``git -C repo args...``; raises EnvError with git's message when ``check`` and it fails."""
    env = {**os.environ, **_GIT_ENV}
    proc = subprocess.run(["git", "-C", repo, *args], input=stdin, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise EnvError(f"git {' '.join(args[:3])} failed in {repo}: {proc.stderr.strip()[:500]}")
    return proc


def apply_patch(worktree: str, patch: str, *, what: str = "patch") -> str | None:
    """Apply ``patch`` in ``worktree``; None on success, else why it did not apply (nothing applied)."""
    if not patch.strip():
        return None
    text = patch if patch.endswith("\n") else patch + "\n"
    proc = git(worktree, "apply", "--whitespace=nowarn", "-", stdin=text, check=False)
    if proc.returncode == 0:
        return None
    return f"the {what} does not apply: {proc.stderr.strip()[:400]}"


def diff(worktree: str, base_commit: str) -> str:
    """The working copy's changes against ``base_commit``, new files included (text diff)."""
    git(worktree, "add", "-A", "--", ".", *EXCLUDES)
    return git(worktree, "diff", "--cached", "--no-color", "--no-ext-diff", base_commit, "--").stdout


def clone_at(repo: str, commit: str, dest: str) -> None:
    """A cheap private copy of ``repo`` at ``commit`` in ``dest`` (``git clone --shared``: objects borrowed)."""
    proc = subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", repo, dest],
                          capture_output=True, text=True, env={**os.environ, **_GIT_ENV})
    if proc.returncode != 0:
        raise EnvError(f"cannot clone {repo}: {proc.stderr.strip()[:300]}")
    git(dest, "checkout", "-q", "--detach", commit)


@dataclass
class _Copy:
    path: str
    patch: str | None = None  # what the copy holds now (None: unknown, restore before use)
    busy: bool = False
    last_used: int = 0


@dataclass
class WorkspaceStats:
    leases: int = 0
    restores: int = 0  # resets + applies
    reused: int = 0  # leases that found the patch already in place
    created: int = 0


class Workspace:
    """Up to ``capacity`` working copies of ``repo`` at ``base_commit``."""

    def __init__(self, repo: str, base_commit: str, *, capacity: int = 4, root: str | None = None) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise EnvError(f"Workspace capacity must be an int >= 1, got {capacity!r}")
        self.repo, self.base_commit, self.capacity = repo, base_commit, capacity
        self.stats = WorkspaceStats()
        self._root = tempfile.mkdtemp(prefix="mcts-swe-", dir=root)
        os.chmod(self._root, 0o755)  # the sandbox user reads the copies
        self._copies: list[_Copy] = []
        self._cond = threading.Condition()
        self._clock = 0
        self._closed = False

    @contextlib.contextmanager
    def checkout(self, patch: str) -> Iterator[str]:
        """A working copy holding ``base_commit`` + ``patch``, for this thread until the block ends.

        Raises EnvError if ``patch`` does not apply. Changes made in the block are the caller's
        to read (``diff``); the copy is marked as holding whatever it holds afterwards.
        """
        copy = self._lease(patch)
        try:
            if copy.patch != patch:
                self._restore(copy, patch)
            else:
                self.stats.reused += 1
            copy.patch = None  # until the caller says what it left (see settle)
            yield copy.path
        finally:
            with self._cond:
                copy.busy = False
                self._cond.notify()

    def settle(self, path: str, patch: str | None) -> None:
        """Record that the copy at ``path`` now holds ``patch`` (None: unknown; the next lease may reuse a known one)."""
        with self._cond:
            for c in self._copies:
                if c.path == path:
                    c.patch = patch

    def _lease(self, patch: str) -> _Copy:
        with self._cond:
            while True:
                if self._closed:
                    raise EnvError("the workspace is closed")
                free = [c for c in self._copies if not c.busy]
                pick = next((c for c in free if c.patch == patch), None)
                if pick is None and len(self._copies) < self.capacity:
                    pick = _Copy(os.path.join(self._root, f"copy{len(self._copies)}"))
                    self._copies.append(pick)
                    pick.busy = True
                    break
                if pick is None and free:
                    pick = min(free, key=lambda c: c.last_used)
                if pick is not None:
                    pick.busy = True
                    break
                self._cond.wait()
            self._clock += 1
            pick.last_used = self._clock
            self.stats.leases += 1
        if not os.path.isdir(os.path.join(pick.path, ".git")):
            try:
                self._create(pick)
            except BaseException:
                with self._cond:  # a copy that could not be made frees its place
                    self._copies.remove(pick)
                    shutil.rmtree(pick.path, ignore_errors=True)
                    self._cond.notify()
                raise
        return pick

    def _create(self, copy: _Copy) -> None:
        clone_at(self.repo, self.base_commit, copy.path)
        copy.patch = ""
        self.stats.created += 1

    def _restore(self, copy: _Copy, patch: str) -> None:
        self.stats.restores += 1
        copy.patch = None
        git(copy.path, "reset", "-q", "--hard", self.base_commit)
        git(copy.path, "clean", "-q", "-f", "-d", "-x")
        why = apply_patch(copy.path, patch)
        if why is not None:
            raise EnvError(why)
        copy.patch = patch

    def close(self) -> None:
        """Delete every working copy (idempotent)."""
        with self._cond:
            self._closed = True
            self._copies = []
            self._cond.notify_all()
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            shutil.rmtree(self._root, ignore_errors=True)

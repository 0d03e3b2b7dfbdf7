"""A scripted agent that applies an instance's gold patch through the env's own actions (proves the harness).

``oracle_actions`` turns the gold patch into ``replace`` actions (each changed block with
enough context to occur exactly once; the whole file where blocks would overlap) and
``create`` actions for new files, then ``submit()``. ``oracle_script`` serves them to a
``ScriptedBackend`` turn by turn.
"""

from __future__ import annotations

import difflib
import re
import shutil
import tempfile
from typing import Callable, Sequence

from mcts_agent.env import Task
from mcts_agent.envs.swe.env import task_instance
from mcts_agent.envs.swe.workspace import apply_patch, clone_at, git
from mcts_agent.errors import EnvError
from mcts_agent.llm.chat import plain_chat_position

_FILE = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.M)


def _replacements(old: str, new: str) -> list[tuple[str, str]]:
    """(old segment, new segment) pairs that turn ``old`` into ``new`` when applied in order."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    blocks = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if op[0] != "equal"]
    out = []
    prev_end = 0
    for _, i1, i2, j1, j2 in blocks:
        for ctx in range(0, 12):
            lo, hi = max(0, i1 - ctx), min(len(a), i2 + ctx)
            seg = "".join(a[lo:hi])
            if seg and old.count(seg) == 1:
                break
        else:
            return [(old, new)]
        if lo < prev_end:  # overlaps the block before: one whole-file replacement is simpler
            return [(old, new)]
        prev_end = hi
        out.append((seg, "".join(a[lo:i1]) + "".join(b[j1:j2]) + "".join(a[i2:hi])))
    return out


def oracle_actions(task: Task) -> list[str]:
    """The actions that apply ``task``'s gold patch, then ``submit()`` (needs the task's gold)."""
    inst = task_instance(task)
    repo = task.meta.get("repo_path")
    if not repo:
        raise EnvError(f"task {task.id!r} has no repo_path")
    tmp = tempfile.mkdtemp(prefix="mcts-swe-oracle-")
    try:
        clone_at(repo, inst.base_commit, tmp)
        paths = [b for _, b in _FILE.findall(inst.patch)]
        before = {p: git(tmp, "show", f"{inst.base_commit}:{p}", check=False) for p in paths}
        why = apply_patch(tmp, inst.patch, what="gold patch")
        if why is not None:
            raise EnvError(f"instance {inst.instance_id!r}: {why}")
        actions = []
        for p in paths:
            with open(f"{tmp}/{p}", encoding="utf-8") as f:
                after = f.read()
            if before[p].returncode != 0:
                actions.append(f"create({p!r}, {after!r})")
                continue
            for old, new in _replacements(before[p].stdout, after):
                actions.append(f"replace({p!r}, {old!r}, {new!r})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return actions + ["submit()"]


def oracle_script(tasks: Sequence[Task]) -> Callable[[str, int], str]:
    """A ``ScriptedBackend`` script that plays ``oracle_actions`` for whichever task the prompt poses
    (found by its base commit: two generated bugs may read the same)."""
    plans = {f"at commit {str(t.meta['base_commit'])[:12]}": oracle_actions(t) for t in tasks}

    def script(prompt: str, i: int) -> str:
        key, _, taken = plain_chat_position(prompt, plans)
        plan = plans[key]
        return plan[taken] if taken < len(plan) else "submit()"

    return script

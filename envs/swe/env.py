"""``swe/bench``: fix an issue in a real repository through the actions of ``aci``; graded as SWE-bench does.

A task is one SWE-bench-format instance (``instances``) with its local checkout. The state
is the patch against the base commit (``payload = {"patch": str}``), so branching copies a
string; acting restores a working copy from a small pool (``workspace``) and reads the new
patch off it. ``run_tests`` runs the repository's visible tests in the sandbox (``testrun``)
against the current patch. The hidden grading data (the gold patch, ``test_patch``,
``FAIL_TO_PASS``, ``PASS_TO_PASS``) travel in ``Task.answer``, which search sees only in
outcome reward mode (as a reward at ``submit()``, never as text), and which the runner keeps
out of tree files (``secret_gold``).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from typing import Any, Sequence

from mcts_agent.env import EnvState, RewardMode, Task
from mcts_agent.envs.agent import AgentEnv, Outcome
from mcts_agent.envs.loading import select
from mcts_agent.envs.swe import aci
from mcts_agent.envs.swe.grading import GradeReport, grade
from mcts_agent.envs.swe.instances import SWEInstance, load_instances
from mcts_agent.envs.swe.projects import SHIPPED, prepare_instances
from mcts_agent.envs.swe.testrun import DEFAULT_PYTEST, PytestRunner, default_cache, prepare_venv
from mcts_agent.envs.swe.workspace import Workspace, diff, git
from mcts_agent.errors import EnvError

SYSTEM = (
    "You are a software engineer fixing an issue in a Python repository. Reply with exactly one action per turn, "
    "written as a call with literal arguments:\n"
    '- view("path") or view("path", start, end): show a file\'s numbered lines\n'
    '- search("text") or search("text", "dir"): find lines holding text\n'
    '- replace("path", "old", "new"): replace text that occurs exactly once in the file\n'
    '- create("path", "content"): create a new file\n'
    '- run_tests("tests/test_x.py"): run tests (no argument: the whole suite)\n'
    "- submit(): finish; your changes are the answer\n"
    "Reproduce the issue first: create a small test and run it, fix the code, then run the test again.\n"
    'Use triple quotes for text over several lines, e.g. replace("a.py", """x = 1\n""", """x = 2\n""").'
)
GRADING_FIELDS = ("patch", "test_patch", "FAIL_TO_PASS", "PASS_TO_PASS")
TEST_OUTPUT_CHARS = 2000


def instance_task(inst: SWEInstance) -> Task:
    """The task of ``inst``: the problem statement shown, the grading data in ``answer`` (hidden)."""
    gold = {"patch": inst.patch, "test_patch": inst.test_patch, "FAIL_TO_PASS": list(inst.FAIL_TO_PASS),
            "PASS_TO_PASS": list(inst.PASS_TO_PASS)}
    meta = {"instance_id": inst.instance_id, "repo": inst.repo, "base_commit": inst.base_commit,
            "repo_path": inst.repo_path, "requirements": list(inst.extra.get("test_requirements", [DEFAULT_PYTEST]))}
    return Task(id=inst.instance_id, question=inst.problem_statement, answer=json.dumps(gold), meta=meta)


def task_instance(task: Task) -> SWEInstance:
    """The instance a task stands for; needs the task's gold (``answer``)."""
    if not task.answer:
        raise EnvError(f"task {task.id!r} carries no grading data (its answer was stripped); grade with the full task")
    gold = json.loads(task.answer)
    m = task.meta
    return SWEInstance(m["instance_id"], m["repo"], m["base_commit"], task.question, gold["patch"], gold["test_patch"],
                       tuple(gold["FAIL_TO_PASS"]), tuple(gold["PASS_TO_PASS"]), m.get("repo_path"))


def load_swe(path: Any = None, split: str = "test", limit: int | None = None, seed: int | None = None,
             repos_dir: str | None = None, **kwargs: Any) -> list[Task]:
    """Tasks from SWE-bench-format instances (a .json/.jsonl file or a ``datasets`` id; None: the shipped
    generated set), first ``limit``. Checkouts are found under ``repos_dir`` (default:
    ``$MCTS_AGENT_SWE_REPOS``); instances made by ``swe generate`` (``project`` field) get theirs
    built there (default: the cache) when it is not there yet."""
    if kwargs:
        raise EnvError(f"load_swe got unexpected arguments {sorted(kwargs)}")
    source = SHIPPED if path is None else path
    repos_dir = repos_dir or os.environ.get("MCTS_AGENT_SWE_REPOS") or None
    instances = load_instances(source, split=split, check=False)
    generated = [i for i in instances if i.extra.get("project") and not i.repo_path]
    repos = repos_dir or str(default_cache() / "repos")
    if generated:
        prepare_instances(generated, repos)
    instances = load_instances(source, repos_dir=repos, split=split)
    return [instance_task(inst) for _, inst in select(instances, limit, seed)]


class SWEEnv(AgentEnv):
    """Edit a repository until its issue is fixed; ``submit()`` ends the episode."""

    secret_gold = True
    stop = ()

    def __init__(self, tasks: Sequence[Task] | None = None, *, data: str | None = None, repos_dir: str | None = None,
                 limit: int | None = None, max_steps: int = 20, venv: str | None = None, copies: int = 4,
                 test_timeout_s: float = 60.0, **kwargs: Any) -> None:
        if tasks is None:
            tasks = load_swe(data, limit=limit, repos_dir=repos_dir)
        super().__init__(tasks, max_steps=max_steps, **kwargs)
        self._venv, self._copies, self.test_timeout_s = venv, copies, test_timeout_s
        self._workspaces: dict[tuple[str, str], Workspace] = {}
        self._runners: dict[tuple[str, ...], PytestRunner] = {}
        self._lock = threading.Lock()
        self._grades: OrderedDict[tuple[str, str], GradeReport] = OrderedDict()
        self._listing: dict[str, str] = {}

    # ----- resources ------------------------------------------------------------------------
    def workspace(self, task: Task) -> Workspace:
        repo, commit = task.meta.get("repo_path"), task.meta.get("base_commit")
        if not repo:
            raise EnvError(f"task {task.id!r} has no repo_path: load it with a repos_dir holding its checkout")
        with self._lock:
            key = (repo, commit)
            if key not in self._workspaces:
                self._workspaces[key] = Workspace(repo, commit, capacity=self._copies)
            return self._workspaces[key]

    def runner(self, task: Task) -> PytestRunner:
        reqs = tuple(sorted(task.meta.get("requirements") or [DEFAULT_PYTEST]))
        with self._lock:
            if reqs not in self._runners:
                venv = self._venv or prepare_venv(reqs)
                self._runners[reqs] = PytestRunner(venv, timeout_s=self.test_timeout_s)
            return self._runners[reqs]

    def close(self) -> None:
        with self._lock:
            for ws in self._workspaces.values():
                ws.close()
            for r in self._runners.values():
                r.close()
            self._workspaces.clear()
            self._runners.clear()
        super().close()

    # ----- the AgentEnv contract ------------------------------------------------------------
    def messages(self, task: Task) -> list[dict[str, str]]:
        user = (f"Repository: {task.meta.get('repo')} at commit {str(task.meta.get('base_commit'))[:12]}\n"
                f"Files at the top level: {self._top_level(task)}\n\nIssue:\n{task.question}")
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

    def start(self, task: Task) -> tuple[Any, Any]:
        return {"patch": ""}, None

    def act(self, state: EnvState, action: str) -> Outcome:
        patch = state.payload["patch"]
        try:
            a = aci.parse_action(action)
            if a.name == "submit":
                reward = 0.0
                if self.reward_mode is RewardMode.OUTCOME:
                    reward = float(self.grade(state.task, patch).resolved)
                return Outcome("Submitted.", {"patch": patch}, reward=reward, terminated=True, answer=patch, role="user")
            obs, new_patch = self._run(state.task, a, patch)
        except aci.ActionError as e:
            return Outcome(f"error: {e}", {"patch": patch}, role="user", info={"valid": False})
        return Outcome(aci.cap(obs), {"patch": new_patch}, role="user", info={"valid": True})

    def verify_state(self, state: EnvState, task: Task) -> bool:
        return self.grade(task, (state.payload or {}).get("patch", "")).resolved

    def answer_key(self, answer: str) -> str:
        return answer.strip()

    # ----- helpers --------------------------------------------------------------------------
    def _run(self, task: Task, a: aci.Action, patch: str) -> tuple[str, str]:
        ws = self.workspace(task)
        with ws.checkout(patch) as copy:
            if a.name in aci.READS:
                obs = aci.READS[a.name](copy, *a.args)
                ws.settle(copy, patch)
                return obs, patch
            if a.name in aci.EDITS:
                obs = aci.EDITS[a.name](copy, *a.args)
                new = diff(copy, ws.base_commit)
                ws.settle(copy, new)
                return obs, new
            run = self.runner(task).run(copy, list(a.args))
            ws.settle(copy, patch)
        counts = {s: list(run.statuses.values()).count(s) for s in ("PASSED", "FAILED", "ERROR")}
        head = "tests timed out" if run.timed_out else (
            f"pytest exit {run.returncode}: {counts['PASSED']} passed, {counts['FAILED']} failed, {counts['ERROR']} errors")
        return f"{head}\n{run.log[-TEST_OUTPUT_CHARS:]}", patch

    def grade(self, task: Task, patch: str) -> GradeReport:
        """SWE-bench's verdict on ``patch`` for ``task`` (cached per patch)."""
        key = (task.id, hashlib.sha256(patch.encode()).hexdigest())
        with self._lock:
            if key in self._grades:
                return self._grades[key]
        inst = task_instance(task)
        report = grade(inst, patch, self.workspace(task), self.runner(task), timeout_s=self.test_timeout_s)
        with self._lock:
            self._grades[key] = report
            while len(self._grades) > 4096:
                self._grades.popitem(last=False)
        return report

    def _top_level(self, task: Task) -> str:
        key = f"{task.meta.get('repo_path')}@{task.meta.get('base_commit')}"
        if key not in self._listing:
            names = git(task.meta["repo_path"], "ls-tree", "--name-only", task.meta["base_commit"]).stdout.split()
            self._listing[key] = ", ".join(names[:60]) + (" ..." if len(names) > 60 else "")
        return self._listing[key]


def check_kwargs() -> dict[str, Any]:
    """A ready env for gymnasium's ``check_env``: two tasks of the shipped set."""
    return {"tasks": load_swe(limit=2)}

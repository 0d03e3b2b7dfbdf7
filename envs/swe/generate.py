"""``mcts-agent swe generate``: SWE-bench-format instances from a real project, by injected bugs (SWE-smith style).

For one project (``projects.PROJECTS``): prepare its repository from the sdist, run its
test suite once in the sandbox (tests failing at baseline are never used), then for
candidate mutation sites (``mutations``; shuffled by ``seed``) change one site and run the
suite again. A candidate becomes an instance when some baseline-passing tests now fail and
some still pass; it is dropped when no test notices, when every test breaks, when
collection fails, or when the run times out. Per instance:

* ``FAIL_TO_PASS``: the tests the bug breaks; ``PASS_TO_PASS``: the other baseline-passing
  tests of the same files;
* ``patch`` (gold): the fix, i.e. the bug undone; ``test_patch``: the test files holding
  FAIL_TO_PASS, which the base commit does not have (the agent never sees them);
* ``base_commit``: the clean commit with the bug in and those files out (``projects.commit_instance``);
* ``problem_statement``: the failing behaviour in words (a failing test's name and error),
  checked to hold no line of the gold patch.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mcts_agent.envs.code.sandbox import SandboxConfig
from mcts_agent.envs.swe import mutations
from mcts_agent.envs.swe.config import GenerateConfig
from mcts_agent.envs.swe.grading import test_files
from mcts_agent.envs.swe.instances import SWEInstance, write_instances
from mcts_agent.envs.swe.projects import commit_instance, prepare_project, project
from mcts_agent.envs.swe.testrun import PytestRunner, prepare_venv
from mcts_agent.envs.swe.workspace import Workspace, diff, git
from mcts_agent.errors import ConfigError

__all__ = ["GenerateConfig", "GenerateReport", "generate"]


@dataclass
class GenerateReport:
    """What a generation run did."""

    instances: list[SWEInstance]
    tried: int
    dropped: Counter
    seconds: float
    baseline_passing: int
    baseline_failing: int

    @property
    def yield_rate(self) -> float:
        return len(self.instances) / self.tried if self.tried else 0.0

    def to_dict(self) -> dict[str, object]:
        return {"instances": len(self.instances), "tried": self.tried, "yield": round(self.yield_rate, 4),
                "dropped": dict(self.dropped), "seconds": round(self.seconds, 2),
                "seconds_per_instance": round(self.seconds / max(1, len(self.instances)), 2),
                "baseline_passing": self.baseline_passing, "baseline_failing": self.baseline_failing}


def _candidates(repo: str, source: str, tests: str, kinds: list[str], seed: int) -> list[tuple[str, str, int]]:
    """Every mutation site of the source files (test files excluded), shuffled by ``seed``."""
    out = []
    for path in sorted(Path(repo, source).rglob("*.py")):
        rel = str(path.relative_to(repo))
        if rel.startswith(tests.rstrip("/") + "/") or path.name.startswith("test_") or path.name == "conftest.py":
            continue
        out += [(rel, k, i) for k, i in mutations.sites(path.read_text(encoding="utf-8")) if k in kinds]
    random.Random(seed).shuffle(out)
    return out


def _statement(project_name: str, f2p: list[str], log: str, gold: str) -> str:
    """The failing behaviour in words; never a line of the gold patch."""
    changed = {ln[1:].strip() for ln in gold.splitlines()
               if ln[:1] in "+-" and not ln.startswith(("+++", "---")) and len(ln[1:].strip()) >= 4}
    message = ""
    for line in log.splitlines():
        if line.startswith(("FAILED ", "ERROR ")) and " - " in line and line.split(" ", 1)[1].split(" - ")[0] in f2p:
            message = line.split(" - ", 1)[1].strip()
            break
    message = re.sub(r" at 0x[0-9a-f]+", "", message)  # object addresses differ from run to run
    if any(c in message for c in changed):
        message = message.split(":", 1)[0]  # the exception type only
    error = f" with:\n\n    {message}\n" if message else ".\n"
    others = f" (and {len(f2p) - 1} other test(s))" if len(f2p) > 1 else ""
    return (f"Since a recent change, {project_name} misbehaves: the test `{f2p[0]}`{others} fails{error}\n"
            f"The tests are right; the bug is in the library's source code. Fix it without changing the tests.")


def generate(cfg: GenerateConfig, progress: Callable[[int, int], None] | None = None) -> GenerateReport:
    """Build instances per ``cfg`` and write them to ``cfg.out``."""
    start = time.perf_counter()
    proj = project(cfg.project)
    repo, clean = prepare_project(cfg.project, cfg.repos_dir)
    venv = prepare_venv(proj.test_requirements)
    runner = PytestRunner(venv, sandbox=SandboxConfig(timeout_s=cfg.timeout_s, memory_mb=2048, max_processes=64,
                                                    max_open_files=256, max_file_mb=64), timeout_s=cfg.timeout_s)
    instances: list[SWEInstance] = []
    dropped: Counter = Counter()
    tried = 0
    try:
        with Workspace(repo, clean, capacity=1) as ws:
            with ws.checkout("") as copy:
                base = runner.run(copy, [proj.tests])
                ws.settle(copy, "")
            passing = {t for t, s in base.statuses.items() if s == "PASSED"}
            if not passing:
                raise ConfigError(f"{proj.requirement}: no test passes at baseline in the sandbox:\n{base.log[-800:]}")
            for rel, kind, index in _candidates(repo, proj.source, proj.tests, cfg.kind_list, cfg.seed):
                if tried >= cfg.max_candidates or len(instances) >= cfg.max_instances:
                    break
                tried += 1
                inst, why = _try(ws, runner, proj, clean, passing, rel, kind, index)
                if inst is None:
                    dropped[why] += 1
                else:
                    inst = SWEInstance(**{**inst.__dict__, "base_commit": commit_instance(repo, clean, inst)})
                    instances.append(inst)
                if progress is not None:
                    progress(tried, len(instances))
    finally:
        runner.close()
    os.makedirs(os.path.dirname(os.path.abspath(cfg.out)), exist_ok=True)
    write_instances(cfg.out, instances)
    return GenerateReport(instances, tried, dropped, time.perf_counter() - start, len(passing),
                          sum(1 for s in base.statuses.values() if s != "PASSED"))


def _try(ws: Workspace, runner: PytestRunner, proj, clean: str, passing: set[str], rel: str, kind: str,
         index: int) -> tuple[SWEInstance | None, str]:
    with ws.checkout("") as copy:
        try:
            path = os.path.join(copy, rel)
            source = Path(path).read_text(encoding="utf-8")
            mutated = mutations.mutate(source, kind, index)
            if mutated == source:
                return None, "no change"
            Path(path).write_text(mutated, encoding="utf-8")
            run = runner.run(copy, [proj.tests])
            if run.timed_out:
                return None, "timeout"
            if not run.statuses or any(s == "ERROR" and "::" not in t for t, s in run.statuses.items()):
                return None, "collection error"
            broken = sorted(t for t in passing if run.statuses.get(t) != "PASSED")
            if not broken:
                return None, "no test fails"
            if len(broken) == len(passing):
                return None, "every test fails"
            diff(copy, clean)  # stages the bug
            buggy = git(copy, "write-tree").stdout.strip()
            gold = git(copy, "diff", "--no-color", buggy, clean, "--").stdout
            files = test_files(broken)
            for f in files:
                os.remove(os.path.join(copy, f))
            git(copy, "add", "-A", "--", *files)
            hidden = git(copy, "write-tree").stdout.strip()
            test_patch = git(copy, "diff", "--no-color", hidden, clean, "--", *files).stdout
            f2p_set = set(broken)
            p2p = sorted(t for t in passing if t.split("::", 1)[0] in files and t not in f2p_set)
        finally:
            ws.settle(copy, None)
    stem = Path(rel).stem.strip("_") or "init"
    iid = f"{proj.name}__{kind}-{stem}-{index}"
    return SWEInstance(iid, proj.name, clean, _statement(proj.name, broken, run.log, gold), gold, test_patch,
                       tuple(broken), tuple(p2p), extra={
                           "project": proj.name, "version": proj.requirement.split("==")[1],
                           "test_requirements": list(proj.test_requirements),
                           "mutation": {"file": rel, "kind": kind, "index": index},
                           "created_by": "mcts-agent swe generate"}), ""

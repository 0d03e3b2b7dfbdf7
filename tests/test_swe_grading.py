"""Grading as SWE-bench does it: our verdicts and pytest-report reading against the swebench package's own."""

from __future__ import annotations

import json

import pytest

from mcts_agent import envs
from mcts_agent.envs.swe.env import SWEEnv, task_instance
from mcts_agent.envs.swe.grading import judge
from mcts_agent.envs.swe.instances import SWEInstance
from mcts_agent.envs.swe.testrun import PytestRun, parse_pytest_report

pytest.importorskip("libcst")

INST = SWEInstance("x__1", "x", "0" * 40, "p", "patch", "", ("t.py::a", "t.py::b"), ("t.py::c", "t.py::d"))


def run(statuses: dict[str, str], returncode: int = 1, timed_out: bool = False) -> PytestRun:
    return PytestRun("", statuses, returncode, timed_out, 0.1)


@pytest.mark.parametrize("statuses, rc, resolved", [
    ({"t.py::a": "PASSED", "t.py::b": "XFAIL", "t.py::c": "PASSED", "t.py::d": "SKIPPED"}, 0, True),
    ({"t.py::a": "PASSED", "t.py::b": "PASSED", "t.py::c": "PASSED", "t.py::d": "FAILED"}, 1, False),
    ({"t.py::a": "PASSED", "t.py::b": "SKIPPED", "t.py::c": "PASSED", "t.py::d": "PASSED"}, 0, False),  # F2P skipped
    ({"t.py::a": "PASSED", "t.py::c": "PASSED", "t.py::d": "PASSED"}, 0, False),  # an F2P test missing
    ({"t.py::a": "PASSED", "t.py::b": "PASSED", "t.py::c": "PASSED", "t.py::d": "PASSED"}, 1, False),  # rc disagrees
    ({}, 4, False),
])
def test_the_verdict_rules(statuses: dict[str, str], rc: int, resolved: bool) -> None:
    assert judge(INST, run(statuses, rc)).resolved is resolved


def test_a_timed_out_run_is_not_resolved() -> None:
    report = judge(INST, run({t: "PASSED" for t in INST.FAIL_TO_PASS + INST.PASS_TO_PASS}, None, timed_out=True))
    assert not report.resolved and report.reason == "the tests timed out"


def test_the_report_parser() -> None:
    log = ("tests/t.py::test_a PASSED\n"  # a progress line, not the summary
           "=========================== short test summary info ============================\n"
           "PASSED tests/t.py::test_a\n"
           "PASSED tests/t.py::test_b[1-2]\n"
           "FAILED tests/t.py::test_c - AssertionError: 1 != 2\n"
           "ERROR tests/t.py::test_d - RuntimeError: boom\n"
           "SKIPPED [1] tests/t.py:40: no network\n"
           "XFAIL tests/t.py::test_e - known bug\n"
           "XPASS tests/t.py::test_f strict\n"
           "ERROR tests/u.py - ImportError: nope\n")
    assert parse_pytest_report(log) == {"tests/t.py::test_a": "PASSED", "tests/t.py::test_b[1-2]": "PASSED",
                                        "tests/t.py::test_c": "FAILED", "tests/t.py::test_d": "ERROR",
                                        "tests/t.py::test_e": "XFAIL", "tests/t.py::test_f": "XPASS",
                                        "tests/u.py": "ERROR"}


# ----- against SWE-bench's own grader, on real runs ------------------------------------------
@pytest.fixture(scope="module")
def env() -> SWEEnv:
    e = envs.make("swe/bench", tasks=envs.load_tasks("swe/bench"))
    yield e
    e.close()


def _patches(env: SWEEnv) -> list[tuple[str, str, str]]:
    """(task id, kind, patch): 5 per instance, 50 in all."""
    tasks = env.tasks
    out = []
    for i, task in enumerate(tasks):
        gold = json.loads(task.answer)["patch"]
        other = json.loads(tasks[(i + 1) % len(tasks)].answer)["patch"]
        file = gold.split("\n", 1)[0].split(" b/")[-1]
        syntax_error = gold + (f"diff --git a/{file}x b/{file}x\nnew file mode 100644\n--- /dev/null\n+++ b/{file}x\n"
                               f"@@ -0,0 +1 @@\n+x\n")
        broken_import = ("diff --git a/conftest.py b/conftest.py\nnew file mode 100644\n--- /dev/null\n"
                         "+++ b/conftest.py\n@@ -0,0 +1 @@\n+raise ImportError('broken on purpose')\n")
        unappliable = "diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-x\n+y\n"
        out += [(task.id, "gold", gold), (task.id, "empty", ""), (task.id, "other", other),
                (task.id, "gold+conftest error" if i % 2 else "gold+new file", broken_import if i % 2 else syntax_error),
                (task.id, "unappliable", unappliable)]
    return out


def test_our_verdicts_agree_with_swebench_on_50_graded_runs(env: SWEEnv) -> None:
    from mcts_agent.envs.swe.official import official_report

    by_id = {t.id: t for t in env.tasks}
    runs = _patches(env)
    assert len(runs) >= 50
    disagreements, resolved = [], 0
    for tid, kind, patch in runs:
        task = by_id[tid]
        ours = env.grade(task, patch)
        theirs = official_report(task_instance(task), patch, ours)
        resolved += ours.resolved
        if ours.resolved != theirs["resolved"]:
            disagreements.append((tid, kind, ours.resolved, theirs["resolved"], ours.reason))
        if not ours.applied:  # SWE-bench: "patch_successfully_applied" is False too
            assert not theirs["patch_successfully_applied"], (tid, kind)
        elif ours.statuses:  # (a run with no test reported is "not applied" to SWE-bench: no status map)
            assert theirs["statuses"] == ours.statuses, (tid, kind)  # the same reading of pytest's report
            tests = theirs["tests_status"]
            assert set(tests["FAIL_TO_PASS"]["success"]) == set(ours.f2p_pass), (tid, kind)
            assert set(tests["PASS_TO_PASS"]["failure"]) == set(ours.p2p_fail), (tid, kind)
        if kind == "gold":
            assert ours.resolved, (tid, ours.reason)
        if kind in ("empty", "unappliable") or kind.startswith("gold+conftest"):
            assert not ours.resolved, (tid, kind)
    assert not disagreements, disagreements
    assert 10 <= resolved < len(runs)

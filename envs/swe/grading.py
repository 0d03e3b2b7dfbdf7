"""Grading a patch as SWE-bench does: model patch, then test patch, then FAIL_TO_PASS and PASS_TO_PASS.

``grade`` takes a clean working copy at the base commit, applies the model's patch (a
patch that does not apply is not resolved), then the instance's ``test_patch``, runs the
test files that hold the listed tests in the sandbox, and reads pytest's report:

* a FAIL_TO_PASS test passes when it is PASSED or XFAIL;
* a PASS_TO_PASS test is kept when it is PASSED, XFAIL or SKIPPED;
* resolved = every FAIL_TO_PASS test passes and every PASS_TO_PASS test is kept.
  A test missing from the report counts against the patch.

As SWE-bench does, a run whose pytest exits non-zero while reporting no failure is not
believed (the tests run in the same interpreter as the patched code, so the report is an
in-process verdict: a patch can print what it likes). ``swebench_log`` writes the run in
the log format SWE-bench's own grader reads, so its verdict can be checked against ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from mcts_agent.envs.swe.instances import SWEInstance
from mcts_agent.envs.swe.testrun import PytestRun, PytestRunner
from mcts_agent.envs.swe.workspace import Workspace, apply_patch

F2P_OK = ("PASSED", "XFAIL")
P2P_OK = ("PASSED", "XFAIL", "SKIPPED")
# SWE-bench's log markers (swebench.harness.constants), for logs its grader can read.
START, END, EXIT = ">>>>> Start Test Output", ">>>>> End Test Output", ">>>>> Test Exit Code"
APPLY_FAIL = ">>>>> Patch Apply Failed"


@dataclass(frozen=True)
class GradeReport:
    """The verdict on one patch for one instance."""

    instance_id: str
    resolved: bool
    applied: bool  # model patch and test patch both applied
    reason: str = ""  # why not resolved, in words
    f2p_pass: tuple[str, ...] = ()
    f2p_fail: tuple[str, ...] = ()
    p2p_pass: tuple[str, ...] = ()
    p2p_fail: tuple[str, ...] = ()
    statuses: dict[str, str] = field(default_factory=dict)
    returncode: int | None = None
    log: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"instance_id": self.instance_id, "resolved": self.resolved, "applied": self.applied,
                "reason": self.reason, "FAIL_TO_PASS": {"success": list(self.f2p_pass), "failure": list(self.f2p_fail)},
                "PASS_TO_PASS": {"success": list(self.p2p_pass), "failure": list(self.p2p_fail)},
                "returncode": self.returncode, "seconds": round(self.seconds, 3)}


def test_files(tests: Sequence[str]) -> list[str]:
    """The files that hold ``tests`` (pytest ids ``path::name``), in first-seen order."""
    out: list[str] = []
    for t in tests:
        f = t.split("::", 1)[0]
        if f not in out:
            out.append(f)
    return out


def judge(instance: SWEInstance, run: PytestRun) -> GradeReport:
    """The verdict from a test run of the patched copy (see the module doc)."""
    st = run.statuses
    f2p_pass = tuple(t for t in instance.FAIL_TO_PASS if st.get(t) in F2P_OK)
    f2p_fail = tuple(t for t in instance.FAIL_TO_PASS if st.get(t) not in F2P_OK)
    p2p_pass = tuple(t for t in instance.PASS_TO_PASS if st.get(t) in P2P_OK)
    p2p_fail = tuple(t for t in instance.PASS_TO_PASS if st.get(t) not in P2P_OK)
    reason = ""
    if run.timed_out:
        reason = "the tests timed out"
    elif not st:
        reason = "pytest reported no tests (collection failed?)"
    elif run.returncode not in (0, None) and not any(s in ("FAILED", "ERROR") for s in st.values()):
        reason = f"pytest exited {run.returncode} but reported no failure: the report is not believed"
    elif f2p_fail or p2p_fail:
        reason = f"{len(f2p_fail)} FAIL_TO_PASS and {len(p2p_fail)} PASS_TO_PASS tests fail"
    resolved = not reason
    return GradeReport(instance.instance_id, resolved, True, reason, f2p_pass, f2p_fail, p2p_pass, p2p_fail,
                       dict(st), run.returncode, run.log, run.seconds)


def grade(instance: SWEInstance, model_patch: str, workspace: Workspace, runner: PytestRunner, *,
          timeout_s: float | None = None) -> GradeReport:
    """Apply ``model_patch`` and the test patch to a clean copy, run the graded tests, judge."""
    with workspace.checkout("") as copy:
        try:
            why = apply_patch(copy, model_patch, what="model patch")
            if why is None:
                why = apply_patch(copy, instance.test_patch, what="test patch")
            if why is not None:
                return GradeReport(instance.instance_id, False, False, why, log=f"{APPLY_FAIL}\n{why}\n")
            tests = list(instance.FAIL_TO_PASS) + list(instance.PASS_TO_PASS)
            run = runner.run(copy, test_files(tests), timeout_s=timeout_s)
        finally:
            workspace.settle(copy, None)  # it holds the test patch: never reuse it as is
    return judge(instance, run)


def swebench_log(report: GradeReport) -> str:
    """The run as SWE-bench's eval log (markers around the test output, then the exit code)."""
    if not report.applied:
        return report.log
    if report.reason == "the tests timed out":
        return f"{START}\n{report.log}\n>>>>> Tests Timed Out\n"
    return f"{START}\n{report.log}\n{END}\n{EXIT}: {report.returncode if report.returncode is not None else -1}\n"

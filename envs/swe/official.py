"""SWE-bench's own grader (PyPI ``swebench``, MIT) on our runs: the check that our verdicts agree with it.

``swebench.harness``'s package ``__init__`` imports its docker and modal clients; the grading
and log-parsing modules themselves need neither. ``harness()`` loads those modules with the
package ``__init__`` skipped (``swebench`` installed with ``--no-deps``; ``unidiff`` is what
they import).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
import types
from typing import Any

from mcts_agent.envs.swe.grading import GradeReport, swebench_log
from mcts_agent.envs.swe.instances import SWEInstance
from mcts_agent.errors import EnvError


def harness() -> tuple[Any, Any]:
    """``(swebench.harness.grading, swebench.types)``, without the docker/modal imports."""
    spec = importlib.util.find_spec("swebench")
    if spec is None or spec.origin is None:
        raise EnvError("the agreement check needs SWE-bench's grader: pip install --no-deps swebench==5.0.2 unidiff")
    if "swebench.harness" not in sys.modules:
        pkg = types.ModuleType("swebench.harness")
        pkg.__path__ = [os.path.join(os.path.dirname(spec.origin), "harness")]
        sys.modules["swebench.harness"] = pkg
    return importlib.import_module("swebench.harness.grading"), importlib.import_module("swebench.types")


def official_report(instance: SWEInstance, patch: str, report: GradeReport) -> dict[str, Any]:
    """SWE-bench's ``get_eval_report`` on our run of ``patch`` (its log written in SWE-bench's format),
    plus ``statuses``: SWE-bench's ``parse_log_pytest`` of the test output."""
    grading, sb_types = harness()
    spec = sb_types.TestSpec(instance_id=instance.instance_id, image="", eval_script_list=[], repo=instance.repo,
                             version=str(instance.extra.get("version", "")), FAIL_TO_PASS=list(instance.FAIL_TO_PASS),
                             PASS_TO_PASS=list(instance.PASS_TO_PASS), log_parser="parse_log_pytest",
                             eval_type="pass_and_fail")
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as f:
        f.write(swebench_log(report))
        path = f.name
    try:
        prediction = {"instance_id": instance.instance_id, "model_name_or_path": "mcts-agent", "model_patch": patch}
        out = grading.get_eval_report(spec, prediction, path, include_tests_status=True)[instance.instance_id]
        statuses, _ = grading.get_logs_eval(spec, path)
    finally:
        os.unlink(path)
    return {**out, "statuses": statuses}

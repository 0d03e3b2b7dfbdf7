"""HumanEval and MBPP environments: registry, prompts, step modes, rewards, no leaks."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from mcts_agent import envs
from mcts_agent.envs.base import RewardMode, Task
from mcts_agent.envs.code.humaneval import HumanEvalEnv, load_humaneval, read_problems
from mcts_agent.envs.code.mbpp import SAMPLE_TASKS, MBPPEnv, load_mbpp
from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError
from mcts_agent.envs.registry import check_kwargs
from mcts_agent.errors import EnvError

MBPP_FILE = Path("/work/shared/data/mbpp/mbpp.jsonl")
# A sandbox that cannot start: any env path that runs code would raise.
NO_SANDBOX = SandboxConfig(bwrap_path="/nonexistent/bwrap", unshare_path="/nonexistent/unshare")


def chat(messages: list[dict[str, str]]) -> str:
    return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    try:
        return Sandbox(SandboxConfig(timeout_s=10.0))
    except SandboxUnavailableError as e:
        pytest.skip(f"full sandbox isolation not available here: {e}")


@pytest.fixture(scope="module")
def he_records() -> dict[str, dict]:
    return {r["task_id"]: r for r in read_problems()}


# ----- registry and the Gymnasium contract ----------------------------------------------
@pytest.mark.parametrize("name, gym_id", [("code/humaneval", "mcts_agent/humaneval-v0"),
                                          ("code/mbpp", "mcts_agent/mbpp-v0")])
def test_registered_and_passes_check_env(name: str, gym_id: str) -> None:
    assert name in envs.list_envs()
    env = envs.make(name, **check_kwargs(name))
    check_env(env, skip_render_check=True)
    assert isinstance(gymnasium.make(gym_id, **check_kwargs(name)).unwrapped, type(env))


def test_loaders() -> None:
    assert len(load_humaneval()) == 164
    assert len(envs.load_tasks("code/humaneval", None, limit=3)) == 3
    if not MBPP_FILE.is_file():
        pytest.skip("MBPP data not present")
    counts = {s: len(load_mbpp(MBPP_FILE, split=s)) for s in ("test", "train", "validation", "prompt", "all")}
    assert counts == {"test": 500, "train": 374, "validation": 90, "prompt": 10, "all": 974}
    with pytest.raises(EnvError, match="MBPP split must be one of"):
        load_mbpp(MBPP_FILE, split="dev")
    with pytest.raises(EnvError, match="does not exist"):
        load_mbpp("/nonexistent/mbpp.jsonl")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(EnvError, match="step_mode must be one of \\('function', 'chunk'\\), got 'line'"):
        MBPPEnv(SAMPLE_TASKS, step_mode="line")
    with pytest.raises(EnvError, match="visible_test_reward must be a number in \\[0, 1\\], got 2"):
        MBPPEnv(SAMPLE_TASKS, visible_test_reward=2)


# ----- hidden tests never reach search in evaluation ------------------------------------
def _hidden_only(task: Task) -> list[str]:
    visible = set(task.meta.get("visible_tests", ()))
    return [line for line in (task.answer or "").splitlines() if line.strip().startswith("assert")
            and line.strip() not in visible]


@pytest.mark.parametrize("make", [
    lambda mode: HumanEvalEnv(load_humaneval(limit=3), reward_mode=mode, sandbox=NO_SANDBOX),
    lambda mode: MBPPEnv(SAMPLE_TASKS, reward_mode=mode, sandbox=NO_SANDBOX)])
def test_hidden_tests_are_stripped_in_evaluation(make) -> None:  # type: ignore[no-untyped-def]
    env = make(RewardMode.NONE)
    task = env.tasks[0]
    hidden = _hidden_only(task)
    assert hidden
    env.reset(options={"task": task})
    state = env.snapshot()
    assert state.task.answer is None
    seen = [json.dumps(state.to_dict()), env.observation(), json.dumps(env.messages(state.task)),
            env.policy_prompt(state, chat)]
    _, reward, terminated, _, _ = env.step("    return 0\n")  # runs no code: the sandbox cannot even start
    seen += [json.dumps(env.snapshot().to_dict()), env.observation()]
    assert terminated and reward == 0.0
    for text in seen:
        for line in hidden:
            assert line.strip() not in text
    training = make(RewardMode.OUTCOME)
    training.reset(options={"task": task})
    assert training.snapshot().task.answer == task.answer


def test_verify_needs_the_full_task() -> None:
    env = MBPPEnv(SAMPLE_TASKS, sandbox=NO_SANDBOX)
    env.reset(options={"task": SAMPLE_TASKS[0]})
    with pytest.raises(EnvError, match="carries no hidden tests"):
        env.verify("def add(a, b):\n    return a + b\n", env.snapshot().task)


def test_mbpp_prompt_shows_only_the_visible_test() -> None:
    task = SAMPLE_TASKS[0]
    shown = MBPPEnv(SAMPLE_TASKS, sandbox=NO_SANDBOX).messages(task)[-1]["content"]
    assert "assert add(1, 2) == 3" in shown and "add(10, 5)" not in shown
    assert MBPPEnv(SAMPLE_TASKS, show_tests=False, sandbox=NO_SANDBOX).messages(task)[-1]["content"] == task.question


# ----- rewards and verification ---------------------------------------------------------
def test_humaneval_function_mode_rewards(sandbox: Sandbox, he_records: dict[str, dict]) -> None:
    rec = he_records["HumanEval/0"]
    env = HumanEvalEnv(load_humaneval(limit=1), reward_mode="outcome", sandbox=sandbox)
    cases = [(rec["canonical_solution"], 1.0), (rec["canonical_solution"].lstrip(), 1.0),  # a stripped step
             (rec["prompt"].split('    """')[0] + "    return any(abs(a - b) < threshold for i, a in "
              "enumerate(numbers) for b in numbers[i + 1:])\n", 1.0),  # a whole def
             ("    return False\n", 0.0)]
    for step, want in cases:
        env.reset(options={"task_index": 0})
        _, reward, terminated, truncated, _ = env.step(step)
        assert (reward, terminated, truncated) == (want, True, False), step


def test_visible_test_partial_credit_in_evaluation(sandbox: Sandbox) -> None:
    env = MBPPEnv(SAMPLE_TASKS, reward_mode="none", visible_test_reward=0.5, sandbox=sandbox)
    for code, want in (("def add(a, b):\n    return 3\n", 0.5), ("def add(a, b):\n    return 0\n", 0.0),
                       ("def add(a, b):\n    return a + b\n", 0.5)):
        env.reset(options={"task_index": 0})
        _, reward, _, _, info = env.step(code)
        assert reward == want and info["visible_pass_fraction"] == want * 2
    training = MBPPEnv(SAMPLE_TASKS, reward_mode="outcome", visible_test_reward=0.5, sandbox=sandbox)
    training.reset(options={"task_index": 0})
    assert training.step("def add(a, b):\n    return a + b\n")[1] == 1.0


def test_verify_many_keeps_order(sandbox: Sandbox) -> None:
    env = MBPPEnv(SAMPLE_TASKS, sandbox=sandbox, max_workers=2)
    add, rev = SAMPLE_TASKS
    pairs = [("def add(a, b):\n    return a + b", add), ("def rev(s):\n    return s", rev), (None, add),
             ("def rev(s):\n    return s[::-1]", rev), ("def add(a, b):\n    return a + b", add)]
    assert env.verify_many(pairs) == [True, False, False, True, True]


# ----- chunk mode -----------------------------------------------------------------------
def test_chunk_mode_ends_at_a_top_level_statement(sandbox: Sandbox) -> None:
    env = MBPPEnv(SAMPLE_TASKS, step_mode="chunk", reward_mode="outcome", sandbox=sandbox)
    assert env.step_delimiter == "\n\n"
    env.reset(options={"task_index": 1})
    root = env.snapshot()
    state, reward, term, _, info = env.transition(root, "def rev(s):\n    out = ''")
    assert (reward, term, info["answer"]) == (0.0, False, None)
    state, reward, term, _, info = env.transition(state, "    for ch in s:\n        out = ch + out\n    return out")
    assert not term
    _, reward, term, _, info = env.transition(state, "print(rev('abc'))")
    assert term and reward == 1.0 and "print" not in info["answer"]
    assert env.transition(root, "def rev(s):\n    return s[::-1]\n```\nDone.")[1:3] == (1.0, True)  # the end marker
    after = env.transition(root, "def rev(s):\n    return s[::-1]")[0]
    assert env.transition(after, "   ")[1:3] == (1.0, True)  # a blank step
    assert root.steps == ()  # branching never touched the root


def test_chunk_mode_truncates_at_the_step_budget() -> None:
    env = MBPPEnv(SAMPLE_TASKS, step_mode="chunk", max_steps=2, sandbox=NO_SANDBOX)
    env.reset(options={"task_index": 0})
    env.step("def add(a, b):")
    _, _, terminated, truncated, _ = env.step("    x = a")
    assert (terminated, truncated) == (False, True)


def test_humaneval_chunk_prompt_continues_the_signature() -> None:
    env = HumanEvalEnv(load_humaneval(limit=1), step_mode="chunk", sandbox=NO_SANDBOX)
    env.reset(options={"task_index": 0})
    env.step("    for i, a in enumerate(numbers):")
    prompt = env.policy_prompt(env.snapshot(), chat)
    assert prompt.endswith('    """\n    for i, a in enumerate(numbers):\n\n')
    assert "```python\nfrom typing import List" in prompt


def test_visible_fraction_is_judged_test_by_test_in_one_run(sandbox: Sandbox) -> None:
    task = Task(id="two-visible", question="Add two numbers.", answer="assert add(1, 2) == 3\n",
                meta={"visible_tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 5"], "entry_point": "add"})
    env = MBPPEnv([task], sandbox=sandbox)
    calls: list[int] = []
    run_programs = env.run_programs
    env.run_programs = lambda programs: calls.append(len(programs)) or run_programs(programs)  # type: ignore[method-assign]
    assert env.visible_pass_fraction("def add(a, b):\n    return a + b\n", task) == 0.5
    assert calls == [1]  # trusted shape: one run, outcomes per test
    calls.clear()
    assert env.visible_pass_fraction("import os\ndef add(a, b):\n    os._exit(0)\n", task) == 0.0
    assert calls == [1, 2]  # a run that stopped early: each test again in a fresh process

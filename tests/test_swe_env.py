"""swe/bench on real git checkouts of a real project (cachetools from its sdist), real sandboxed pytest."""

from __future__ import annotations

import json
import os

import pytest

from mcts_agent import envs
from mcts_agent.env import RewardMode, Task
from mcts_agent.envs.swe.env import SWEEnv, task_instance
from mcts_agent.envs.swe.oracle import oracle_actions, oracle_script
from mcts_agent.errors import EnvError
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.search import SearchConfig, run_search

pytest.importorskip("libcst")


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return envs.load_tasks("swe/bench")  # the shipped generated set (two bugs read the same); built once


@pytest.fixture(scope="module")
def env(tasks: list[Task]) -> SWEEnv:
    e = envs.make("swe/bench", tasks=tasks)
    yield e
    e.close()


def gold(task: Task) -> dict:
    return json.loads(task.answer or "{}")


def test_the_oracle_resolves_every_task_through_the_planner(env: SWEEnv, tasks: list[Task], tmp_path) -> None:
    cfg = SearchConfig(algo="greedy", max_step_tokens=100_000, max_trees_in_flight=len(tasks), env_workers=2)
    trees = run_search(tasks, env, ScriptedBackend(oracle_script(tasks)), cfg)
    for tree, task in zip(trees, tasks):
        state = tree.nodes[tree.answer_node].state
        assert state.terminated and state.answer == state.payload["patch"]
        assert state.payload["patch"] == gold(task)["patch"]  # the same diff, byte for byte
        report = env.grade(task, state.payload["patch"])
        assert report.resolved and report.applied and not report.f2p_fail and not report.p2p_fail, report.reason
        assert env.verify_state(state, task)


def test_unfixed_and_unappliable_patches_are_not_resolved(env: SWEEnv, tasks: list[Task]) -> None:
    task = tasks[0]
    empty = env.grade(task, "")
    assert not empty.resolved and empty.applied and set(empty.f2p_fail) == set(task_instance(task).FAIL_TO_PASS)
    assert "FAIL_TO_PASS" in empty.reason
    broken = "diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-x\n+y\n"
    bad = env.grade(task, broken)
    assert not bad.resolved and not bad.applied and bad.reason.startswith("the model patch does not apply")


def test_the_state_is_the_patch_and_branches_are_independent(env: SWEEnv, tasks: list[Task]) -> None:
    env.reset(options={"task": tasks[0]})
    root = env.snapshot()
    assert root.payload == {"patch": ""}
    path = [b for b in task_instance(tasks[0]).patch.split() if b.startswith("a/")][0][2:]
    a, *_ = env.transition(root, 'create("notes_a.txt", "A\\n")')
    b, *_ = env.transition(root, 'create("notes_b.txt", "B\\n")')
    assert "notes_a.txt" in a.payload["patch"] and "notes_b.txt" not in a.payload["patch"]
    assert "notes_b.txt" in b.payload["patch"] and "notes_a.txt" not in b.payload["patch"]
    assert root.payload == {"patch": ""}
    a2, *_ = env.transition(a, 'view("notes_a.txt")')
    assert a2.turns[-1].observation.endswith("    1 A") and a2.payload == a.payload
    b2, *_ = env.transition(b, 'view("notes_a.txt")')
    assert b2.turns[-1].observation == "error: no file 'notes_a.txt'"
    assert env.transition(root, f'view("{path}")')[0].turns[-1].observation.startswith(path)
    assert env.workspace(tasks[0]).stats.reused > 0  # a child found its parent's copy as it was left


def test_a_malformed_action_is_an_error_observation(env: SWEEnv, tasks: list[Task]) -> None:
    env.reset(options={"task": tasks[1]})
    obs, reward, terminated, truncated, info = env.step("please open the file")
    assert obs.startswith("error: not a call with literal arguments") and not (terminated or truncated)
    assert info["valid"] is False
    obs, *_ = env.step('replace("setup.cfg", "no such text anywhere", "x")')
    assert obs == ("error: old string occurs 0 times in setup.cfg; it must occur exactly once "
                   "(copy it exactly, with more context to make it unique)")
    obs, _, terminated, _, _ = env.step("submit()")
    assert obs == "Submitted." and terminated


def test_hidden_grading_data_never_reach_the_agent(env: SWEEnv, tasks: list[Task]) -> None:
    task = tasks[0]
    inst = task_instance(task)
    env.reset(options={"task": task})
    state = env.snapshot()
    assert state.task.answer is None and env.secret_gold
    shown = env.policy_prompt(state, lambda messages, **kw: json.dumps(messages))
    for test in inst.FAIL_TO_PASS[1:] + inst.PASS_TO_PASS:
        assert test not in shown
    fixed = [ln[1:] for ln in inst.patch.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    assert fixed and not any(line.strip() in shown for line in fixed if len(line.strip()) > 8)
    hidden_file = inst.FAIL_TO_PASS[0].split("::")[0]
    obs, *_ = env.step(f'view("{hidden_file}")')
    assert obs == f"error: no file '{hidden_file}'"  # the base commit does not hold the hidden test files
    obs, *_ = env.step(f'run_tests("{inst.FAIL_TO_PASS[0]}")')
    assert "pytest exit 4" in obs and "not found" in obs
    with pytest.raises(EnvError, match="carries no grading data"):
        task_instance(state.task)


def test_outcome_mode_pays_the_grade_at_submit(tasks: list[Task]) -> None:
    env = envs.make("swe/bench", tasks=tasks[:1], reward_mode=RewardMode.OUTCOME)
    try:
        for actions, want in ((oracle_actions(tasks[0]), 1.0), (["submit()"], 0.0)):
            env.reset(options={"task": tasks[0]})
            rewards = [env.step(a)[1] for a in actions]
            assert rewards[:-1] == [0.0] * (len(actions) - 1) and rewards[-1] == want
    finally:
        env.close()


def test_agent_tests_run_in_the_sandbox(env: SWEEnv, tasks: list[Task], tmp_path) -> None:
    env.reset(options={"task": tasks[2]})
    probe = (
        "import os, socket\n"
        "def test_escape():\n"
        "    for path in ('/repo/setup.cfg', '/venv/pyvenv.cfg'):\n"
        "        try:\n"
        "            open(path, 'a').write('pwned')\n"
        "            raise AssertionError('WROTE ' + path)\n"
        "        except OSError:\n"
        "            pass\n"
        "    assert not os.path.exists('/root/.cache')\n"
        "    try:\n"
        "        socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
        "        raise AssertionError('NETWORK')\n"
        "    except OSError:\n"
        "        pass\n"
    )
    env.step(f"create('tests/test_probe.py', {probe!r})")
    obs, *_ = env.step('run_tests("tests/test_probe.py")')
    assert "1 passed, 0 failed" in obs, obs
    workspace = env.workspace(tasks[2])
    assert "pwned" not in open(os.path.join(tasks[2].meta["repo_path"], "setup.cfg")).read()
    assert workspace.stats.leases > 0


def test_run_files_keep_the_grading_data_out(env: SWEEnv, tasks: list[Task], tmp_path) -> None:
    from mcts_agent.runner import run_tasks

    cfg = SearchConfig(algo="greedy", max_step_tokens=100_000, max_trees_in_flight=2)
    summary = run_tasks(tasks[:2], env, ScriptedBackend(oracle_script(tasks[:2])), cfg, tmp_path / "run",
                        env_id="swe/bench")
    assert summary.correct == 2
    written = "".join(p.read_text() for p in (tmp_path / "run").iterdir() if p.is_file())
    for task in tasks[:2]:
        inst = task_instance(task)
        assert inst.test_patch[:200] not in written and inst.PASS_TO_PASS[0] not in written

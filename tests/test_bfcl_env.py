"""BFCL tool-use envs: registration, bad actions, safety guards, gold isolation, branching, oracle search."""

from __future__ import annotations

import copy
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import gymnasium
import pytest

pytest.importorskip("bfcl_eval")

from mcts_agent import envs  # noqa: E402
from mcts_agent.env import EnvState, RewardMode, Task  # noqa: E402
from mcts_agent.envs.tool import bfcl_calls, bfcl_data  # noqa: E402
from mcts_agent.envs.tool.bfcl import NO_CALL, BFCLEnv, openai_tools  # noqa: E402
from mcts_agent.envs.tool.bfcl_multi import BFCLMultiTurnEnv, user_turn_text  # noqa: E402
from mcts_agent.envs.tool.bfcl_official import oracle_script, reference_reply, reference_turns  # noqa: E402
from mcts_agent.errors import EnvError  # noqa: E402
from mcts_agent.llm.scripted import ScriptedBackend  # noqa: E402
from mcts_agent.search import SearchConfig, run_search  # noqa: E402

from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import state_checker  # noqa: E402

TRIANGLE = "calculate_triangle_area"


def _task(category: str, index: int = 0) -> Task:
    return bfcl_data.load_bfcl(None, category=category)[index]


def _ended_calls(env: Any, state: EnvState, action: str) -> tuple[EnvState, bool]:
    nxt, _, terminated, _, _ = env.transition(state, action)
    return nxt, terminated


# ----- registration and data -----------------------------------------------------------------
@pytest.mark.parametrize("category", bfcl_data.CATEGORIES)
def test_every_category_is_registered(category: str) -> None:
    entry = envs.get_entry(f"tool/bfcl-{category}")
    env = envs.make(entry.name, limit=2)
    obs, info = env.reset(seed=0)
    assert isinstance(obs, str) and obs and info["task_id"].startswith(category)
    gym_env = gymnasium.make(entry.gym_id, limit=2)
    assert isinstance(gym_env.reset(seed=0)[0], str)
    assert len(envs.load_tasks(entry.name, limit=3)) == 3


def test_bad_category_and_missing_package_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("simple_java", "nope"):
        with pytest.raises(EnvError, match=f"{bad}.*simple_python.*multi_turn_miss_param"):
            bfcl_data.load_bfcl(None, category=bad)
    with pytest.raises(EnvError, match="'multi_turn_base'.*supported: simple_python"):
        BFCLEnv(category="multi_turn_base")
    with pytest.raises(EnvError, match="'irrelevance'.*supported: multi_turn_base"):
        BFCLMultiTurnEnv(category="irrelevance")
    monkeypatch.setitem(sys.modules, "bfcl_eval", None)
    with pytest.raises(EnvError, match=r"pip install --no-deps bfcl-eval==2026\.3\.23.*mcts-agent\[agents\]"):
        bfcl_data.require_bfcl()


def test_bfcl_writes_nothing_into_site_packages() -> None:
    import bfcl_eval

    root = os.environ["BFCL_PROJECT_ROOT"]
    site = Path(bfcl_eval.__file__).resolve().parents[1]
    assert not Path(root).resolve().is_relative_to(site)
    assert not (site / "result").exists() and not (site / "score").exists()


def test_tasks_hold_no_gold_in_meta_and_load_from_a_file(tmp_path: Path) -> None:
    for cat in bfcl_data.CATEGORIES:
        for t in bfcl_data.load_bfcl(None, category=cat, limit=3):
            assert t.answer and t.answer not in json.dumps(t.meta) and "ground_truth" not in json.dumps(t.meta)
    src = Path(bfcl_data.require_bfcl().PROMPT_PATH)
    for cat in ("simple_python", "multi_turn_miss_func"):
        lines = (src / f"BFCL_v4_{cat}.json").read_text().splitlines()[:2]
        (tmp_path / f"{cat}.jsonl").write_text("\n".join(lines) + "\n")
        tasks = bfcl_data.load_bfcl(tmp_path / f"{cat}.jsonl", category=cat)
        assert [t.to_dict() for t in tasks] == [t.to_dict() for t in bfcl_data.load_bfcl(None, category=cat, limit=2)]


# ----- single-turn actions -------------------------------------------------------------------
def test_single_turn_bad_actions_are_error_observations(tmp_path: Path) -> None:
    env = BFCLEnv(category="simple_python", limit=1)
    s0 = env.initial_state(env.tasks[0])
    pwned = tmp_path / "pwned.txt"
    bad = {
        "invalid syntax": f"[{TRIANGLE}(base=10, height=5]",
        "unknown function": "[triangle_area(base=10, height=5)]",
        "must be of type integer": f"[{TRIANGLE}(base='10', height=5)]",
        "must be of type integer, got list": f"[{TRIANGLE}(base=[10], height=5)]",
        "missing required": f"[{TRIANGLE}(base=10)]",
        "unknown parameter": f"[{TRIANGLE}(base=10, height=5, color='red')]",
        "refused": f"[{TRIANGLE}(base=__import__('os').system('touch {pwned}'), height=5)]",
        "refused by the safety guard": f"[{TRIANGLE}(base=open('{pwned}', 'w').write('x') + 1, height=5)]",
        "only + - * /": f"[{TRIANGLE}(base=2**99999, height=5)]",
        "refused by the safety": f"[{TRIANGLE}(base=9**9**9, height=5)]",
        "Lambda": f"[{TRIANGLE}(base=lambda: 1, height=5)]",
    }
    for expected, action in bad.items():
        start = time.perf_counter()
        s1, terminated = _ended_calls(env, s0, action)
        assert time.perf_counter() - start < 1.0, action
        assert not terminated and s1.turns[-1].role == "tool", action
        assert s1.turns[-1].observation.startswith("Error") and expected in s1.turns[-1].observation, (action, s1.turns)
        assert not bfcl_calls.single_turn_verdict(env.tasks[0], action)[0]
    assert not pwned.exists()
    s = s0
    for action in list(bad.values())[:3]:
        s, *_ = env.transition(s, action)
    assert s.truncated and not env.verify_state(s, env.tasks[0])  # max_steps=3 spent on errors


def test_single_turn_endings() -> None:
    env = BFCLEnv(category="simple_python", limit=1)
    task = env.tasks[0]
    s0 = env.initial_state(task)
    for prose in ("I cannot help with that.", "[]", ""):
        s1, terminated = _ended_calls(env, s0, prose)
        assert terminated and s1.answer == NO_CALL and not env.verify_state(s1, task)
    right, same = f"[{TRIANGLE}(base=10, height=5)]", f"```\n{TRIANGLE}(height=5, base=10)\n```"
    a, b = env.transition(s0, right)[0], env.transition(s0, same)[0]
    assert a.terminated and a.answer == b.answer and env.answer_key(a.answer) == env.answer_key(b.answer)
    assert env.verify_state(a, task) and env.verify_state(b, task)
    irr = BFCLEnv(category="irrelevance", limit=1)
    s1, terminated = _ended_calls(irr, irr.initial_state(irr.tasks[0]), "None of these functions fit.")
    assert terminated and irr.verify_state(s1, irr.tasks[0])
    outcome = BFCLEnv(category="simple_python", limit=1, reward_mode="outcome")
    assert outcome.transition(outcome.initial_state(task), right)[1] == 1.0
    assert env.transition(s0, right)[1] == 0.0  # evaluation mode: no reward reaches search


def test_stale_state_trap_is_avoided() -> None:
    multi = _task("multi_turn_base")
    right = [[r, "Done."] if r else ["ok"] for r in reference_turns(multi)]
    wrong = copy.deepcopy(right)
    wrong[0] = ["[cd(folder='nowhere')]"]
    verdicts = [bfcl_calls.multi_turn_verdict(multi, x)[0] for x in (wrong, right, right, wrong)]
    assert verdicts == [False, True, True, False]
    left = [k for k in vars(bfcl_calls._mtu) if k.startswith("mctsagent") and k.endswith("_instance")]
    assert left == []
    single = _task("simple_python")
    assert [bfcl_calls.single_turn_verdict(single, x)[0] for x in ("[]", reference_reply(single))] == [False, True]


# ----- multi-turn actions --------------------------------------------------------------------
def test_multi_turn_bad_actions_execute_nothing(tmp_path: Path) -> None:
    env = BFCLMultiTurnEnv(category="multi_turn_base", limit=1)
    task = env.tasks[0]
    s0 = env.initial_state(task)
    before = copy.deepcopy(s0.live)
    pwned = tmp_path / "pwned.txt"
    bad = ["[cd(folder='document']", "[nosuch_tool(x=1)]", "[cd(folder='document'), nosuch_tool(x=1)]",
           f"[cd(folder=__import__('os').system('touch {pwned}'))]",
           f"[ls(a={{'open': {{'file': '{pwned}', 'mode': 'w'}}}})]",  # BFCL renders this dict as a call
           f"[cd(folder=open('{pwned}', 'w').write('x') + 1)]", "[cd(folder=2**99999)]", "[cd(folder=9**9**9)]",
           "[cd(folder='a'.join(['x']))]"]
    for action in bad:
        start = time.perf_counter()
        s1, terminated = _ended_calls(env, s0, action)
        assert time.perf_counter() - start < 1.0, action
        assert not terminated and s1.turns[-1].role == "tool" and s1.turns[-1].observation.startswith("Error"), action
        assert "Nothing was executed" in s1.turns[-1].observation and s1.payload == s0.payload
    assert not pwned.exists()
    assert state_checker(s0.live, before)["valid"]
    s1, terminated = _ended_calls(env, s0, "Let me think about it.")  # prose ends the turn
    assert not terminated and s1.turns[-1].role == "user" and s1.payload["turn"] == 1
    assert s1.turns[-1].observation == user_turn_text(task, 1)


def test_miss_func_reveals_held_out_docs_only_at_their_turn() -> None:
    env = BFCLMultiTurnEnv(category="multi_turn_miss_func", limit=1)
    task = env.tasks[0]
    (turn, docs), = task.meta["missed_function"].items()
    names = [d["name"] for d in docs]
    s = env.initial_state(task)
    prompts = []
    for _ in range(int(turn)):
        prompts.append(env.policy_prompt(s, ScriptedBackend(lambda p, i: "").format_chat))
        s, *_ = env.transition(s, "Done.")
    assert all(f'"{n}"' not in p and f"'{n}'" not in p for p in prompts for n in names)
    assert "I have updated some more functions" in s.turns[-1].observation and names[0] in s.turns[-1].observation


def test_snapshot_round_trip_replays_the_same_backend_state() -> None:
    env = BFCLMultiTurnEnv(category="multi_turn_base", limit=1)
    env.reset(options={"task_index": 0})
    ref = reference_turns(env.tasks[0])
    for action in (ref[0], "Done.", ref[1]):
        env.step(action)
    state = env.snapshot()
    restored = EnvState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored.live is None and restored == state
    assert state_checker(env.backends(restored), state.live)["valid"]
    a, b = env.transition(state, "[pwd()]")[0], env.transition(restored, "[pwd()]")[0]
    assert a.turns[-1].observation == b.turns[-1].observation and state_checker(a.live, b.live)["valid"]
    env.restore(restored)
    assert env.step("Done.")[0] == user_turn_text(env.tasks[0], 2)


def test_concurrent_transitions_are_independent() -> None:
    env = BFCLMultiTurnEnv(category="multi_turn_base", limit=1)
    s0 = env.initial_state(env.tasks[0])
    actions = ["[cd(folder='document')]", "[mkdir(dir_name='t1')]", "[ls(a=True)]", "[pwd()]"] * 4
    serial = [env.transition(s0, a)[0].turns[-1].observation for a in actions]
    out: list[str | None] = [None] * len(actions)

    def run(i: int) -> None:
        out[i] = env.transition(s0, actions[i])[0].turns[-1].observation

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == serial and env.transition(s0, "[pwd()]")[0].turns[-1].observation == serial[3]


# ----- search: gold isolation and an oracle through the real planner ------------------------
def _subset(category: str, n: int) -> list[Task]:
    tasks = bfcl_data.load_bfcl(None, category=category)
    if bfcl_data.is_multi_turn(category):  # the shortest episodes with at least two user turns
        tasks = sorted((t for t in tasks if len(t.meta["turns"]) > 1), key=lambda t: (len(t.meta["turns"]), t.id))
    return tasks[:n]


ORACLE_SETS = {"simple_python": 3, "parallel": 2, "irrelevance": 2, "multi_turn_base": 2,
               "multi_turn_miss_func": 2, "multi_turn_miss_param": 2}


@pytest.mark.parametrize("algo", ["greedy", "mcts"])
@pytest.mark.parametrize("category", list(ORACLE_SETS))
def test_scripted_oracle_solves_everything_through_the_planner(category: str, algo: str) -> None:
    tasks = _subset(category, ORACLE_SETS[category])
    multi = bfcl_data.is_multi_turn(category)
    env = (BFCLMultiTurnEnv if multi else BFCLEnv)(tasks, category=category)
    depth = max(2 * len(t.meta["turns"]) for t in tasks) + 2
    config = SearchConfig(algo=algo, simulations=depth, branching=2, max_step_tokens=4000, env_workers=2)
    trees = run_search(tasks, env, ScriptedBackend(oracle_script(tasks)), config)
    for task, tree in zip(tasks, trees):
        assert tree.answer_node is not None, (task.id, [n.observation for n in tree.nodes])
        assert env.verify_state(tree.nodes[tree.answer_node].state, task), task.id


@pytest.mark.parametrize("category", ["simple_python", "irrelevance", "multi_turn_base", "multi_turn_miss_func"])
def test_gold_never_reaches_prompts_or_trees_in_evaluation_mode(category: str) -> None:
    tasks = _subset(category, 2)
    multi = bfcl_data.is_multi_turn(category)
    env = (BFCLMultiTurnEnv if multi else BFCLEnv)(tasks, category=category, reward_mode=RewardMode.NONE)
    script = (lambda p, i: "Done." if p.count("\nAssistant:") > 1 else "[ls(a=True)]") if multi else (
        lambda p, i: ["[f(a=1)]", "I cannot."][i % 2])
    trees = run_search(tasks, env, ScriptedBackend(script), SearchConfig(algo="mcts", simulations=6, branching=2))
    for task, tree in zip(tasks, trees):
        golds = [task.answer] + ([c for turn in json.loads(task.answer) for c in turn if len(c) > 24] if multi else [])
        text = json.dumps(tree.to_dict()) + "".join(tree.prompt(n.id) or "" for n in tree.nodes)
        assert not [g for g in golds if g in text], task.id
        assert all(n.state is None or n.state.task.answer is None for n in tree.nodes)
        assert all(n.reward in (None, 0.0) for n in tree.nodes)


@pytest.mark.model
def test_real_model_runs_the_harness(embedded_backend: Any) -> None:
    single = _subset("simple_python", 2)
    multi = [min(bfcl_data.load_bfcl(None, category="multi_turn_base"),
                 key=lambda t: len(json.dumps(openai_tools(t.meta["functions"], t.meta["category"]))))]
    observed = 0
    for env, tasks in ((BFCLEnv(single), single), (BFCLMultiTurnEnv(multi, max_steps=4), multi)):
        for config in (SearchConfig(algo="greedy", max_step_tokens=64),
                       SearchConfig(algo="mcts", simulations=3, branching=2, max_step_tokens=64)):
            for task, tree in zip(tasks, run_search(tasks, env, embedded_backend, config)):
                assert len(tree.nodes) > 1
                for n in tree.nodes[1:]:  # an action cut by max_step_tokens never reaches the world
                    assert n.observation or (n.truncated and n.finish_reason == "length"), n
                    observed += bool(n.observation)
                    assert isinstance(env.verify_state(n.state, task), bool)
    assert observed > 0

"""ScienceWorld (PyPI scienceworld==1.2.3, its JVM simulator): tasks, error replies, replay branching, staleness,
the package's gold paths through the planner, JVM cleanup, and one real-model search through the CLI.

One env (two live JVMs) is shared by the module. Needs Java (``scripts/install_system_deps.sh``) and the
package (``pip install -e '.[agents]'``); these tests skip only where either is missing.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from mcts_agent.envs.text.scienceworld_jvm import (NO_MATCH, Simulator, default_max_instances, live_pids,
                                                   scienceworld_available)

REASON = scienceworld_available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=str(REASON))

from mcts_agent.envs.text.scienceworld import (MAX_VALID_CHARS, ScienceWorldEnv, oracle_script,  # noqa: E402
                                               split_variations)
from mcts_agent.errors import EnvError  # noqa: E402
from mcts_agent.lifecycle import pid_alive  # noqa: E402
from mcts_agent.llm.scripted import ScriptedBackend  # noqa: E402
from mcts_agent.search import SearchConfig, run_search  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def scienceworld_jvms() -> set[int]:
    """Every live java process of this machine running the scienceworld jar."""
    out = subprocess.run(["pgrep", "-f", "scienceworld.jar"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split() if pid_alive(int(p))}


@pytest.fixture(scope="module")
def env() -> Iterator[ScienceWorldEnv]:
    e = ScienceWorldEnv(task=["find-living-thing", "find-plant"], variations=2, max_instances=2, max_steps=24)
    yield e
    e.close()


def test_tasks_are_the_packages_variations_with_its_own_splits(env: ScienceWorldEnv) -> None:
    assert [t.id for t in env.tasks] == ["scienceworld-find-living-thing-225", "scienceworld-find-living-thing-226",
                                         "scienceworld-find-plant-225", "scienceworld-find-plant-226"]
    task = env.tasks[0]
    assert task.question.startswith("Your task is to find a(n) living thing.") and "This room is called" in task.question
    splits = env.pool.use(lambda sim: {s: split_variations(sim, "find-living-thing", s) for s in ("train", "dev", "test")})
    assert splits["train"][:2] == [0, 1] and splits["test"][:2] == [225, 226]
    assert not set(splits["train"]) & set(splits["test"]) and not set(splits["dev"]) & set(splits["test"])
    assert 1 <= default_max_instances() <= 4 and default_max_instances(1000) == 1 and default_max_instances(10**6) == 4


def test_bad_actions_get_the_simulators_reply_and_the_episode_goes_on(env: ScienceWorldEnv) -> None:
    obs, _ = env.reset(options={"task_index": 0})
    for action in ("fly to the moon", "", "   ", "look at the unicorn"):
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs == NO_MATCH and not terminated and not truncated and info["valid"] is False and reward == 0.0
    obs, _, terminated, _, info = env.step("  open door to hallway \n")  # stripped before it reaches the simulator
    assert obs == "The door is now open." and info["valid"] and info["score"] > 0 and not terminated
    obs, reward, terminated, _, info = env.step("focus on agent")  # the wrong focus: the package's failure end
    assert terminated and info["score"] < 0 and reward == 0.0 and not env.verify_state(env.snapshot(), env.tasks[0])
    state = env.snapshot()
    assert len(state.payload["hashes"]) == len(state.turns) + 1 and state.payload["failed"]


def test_the_gold_paths_succeed_through_the_planner(env: ScienceWorldEnv) -> None:
    tasks = env.tasks[:3]
    scored = ScienceWorldEnv(tasks, max_instances=2, max_steps=24, reward_mode="outcome")
    try:
        trees = run_search(tasks, scored, ScriptedBackend(oracle_script(scored, tasks)),
                           SearchConfig(algo="greedy", max_step_tokens=200, env_workers=2))
        finals = [t.nodes[t.answer_node].state for t in trees]
        assert [scored.verify_state(s, task) for s, task in zip(finals, tasks)] == [True] * 3
        assert {t.nodes[t.answer_node].reward for t in trees} == {1.0}  # the package's score 100 -> 1.0
        assert all(s.payload["score"] == 100 and s.payload["completed"] for s in finals)
        assert scored.pool.stats.mismatches == 0
    finally:
        scored.close()


def test_branches_by_replay_equal_runs_from_scratch(env: ScienceWorldEnv) -> None:
    task = env.tasks[1]
    gold = env.gold_actions(task)
    root = env.initial_state(task)
    nodes, frontier = [], [root]
    for depth in range(3):  # every node gets two children (a gold step and a detour): 2 JVMs for 14 nodes
        nxt = []
        for state in frontier:
            for action in (gold[depth], "look around" if depth % 2 else "inventory"):
                child = env.transition(state, action)[0]
                nodes.append(child)
                nxt.append(child)
        frontier = nxt
    st = env.pool.stats
    assert st.replayed > 0 and st.mismatches == 0 and len(env.pool._slots) == 2
    with Simulator() as fresh:
        for node in nodes[::2]:
            res = fresh.reset(env.key(task))
            for action in node.steps:
                res = fresh.step(action)
            assert res.observation == node.turns[-1].observation and res.hash == node.payload["hashes"][-1]


def test_a_replay_that_sees_another_world_marks_the_node_stale(env: ScienceWorldEnv) -> None:
    task = env.tasks[2]
    first = env.transition(env.initial_state(task), "open door to hallway")[0]
    forged = replace(first, payload={**first.payload, "hashes": [first.payload["hashes"][0], "0" * 16]})
    nxt, reward, terminated, _, info = env.transition(forged, "look around")
    assert terminated and info["stale"] and nxt.payload["stale"] and reward == 0.0 and not env.verify_state(nxt, task)
    assert nxt.turns[-1].observation.startswith("Error: this state cannot be reached again by replay (stale node)")


def test_valid_actions_are_shown_only_when_asked(env: ScienceWorldEnv) -> None:
    shown = ScienceWorldEnv(env.tasks[:1], max_instances=1, show_valid_actions=True)
    try:
        obs = shown.transition(shown.initial_state(env.tasks[0]), "look around")[0].turns[-1].observation
        listed = obs.split("\nValid actions: ")[1]
        assert listed.startswith("connect agent to air, ") and obs.endswith(" ...")  # the package's ~900, cut
        assert len(obs) <= MAX_VALID_CHARS + 4
    finally:
        shown.close()
    assert "Valid actions" not in env.tasks[0].question


def test_bad_options_name_the_value_and_what_was_expected() -> None:
    with pytest.raises(EnvError, match=r"unknown ScienceWorld task 'find-livng-thing' \(did you mean find-living-thing"):
        ScienceWorldEnv(task="find-livng-thing")
    with pytest.raises(EnvError, match=r"max_instances must be an int >= 1 \(live JVMs, ~0.6 GB each\), got 0"):
        ScienceWorldEnv(max_instances=0)
    with pytest.raises(EnvError, match=r"ScienceWorld split must be one of \['test', 'dev', 'train'\], got 'val'"):
        ScienceWorldEnv(split="val")
    with pytest.raises(EnvError, match="variations must be a count >= 1 or a non-empty list of ints >= 0, got \\[-1\\]"):
        ScienceWorldEnv(variations=[-1])
    with pytest.raises(EnvError, match=r"heap_mb must be an int >= 128 \(MB of JVM heap\), got 64"):
        Simulator(heap_mb=64)
    with ScienceWorldEnv(task="melt", variations=[0], max_instances=1) as e:
        with pytest.raises(EnvError, match=r"variations \[0\] of 'melt' are not in its test split \(21..29\)"):
            e.tasks


def test_a_pickled_env_carries_its_tasks_and_steps_in_a_jvm_of_its_own() -> None:
    """What a Ray or process worker gets: the options and tasks; the copy's JVMs are its own."""
    with ScienceWorldEnv(task="find-living-thing", variations=1, max_instances=1) as e:
        copy = pickle.loads(pickle.dumps(e))
        try:
            assert copy.tasks == e.tasks and copy.pool is not e.pool
            assert copy.reset(seed=0)[0] == e.reset(seed=0)[0]
            assert copy.step("look around")[0] == e.step("look around")[0]
            assert copy.pool._slots[0].instance is not e.pool._slots[0].instance
        finally:
            copy.close()


def test_close_and_an_exception_stop_every_jvm() -> None:
    before = scienceworld_jvms()
    e = ScienceWorldEnv(task="find-animal", variations=2, max_instances=2)
    e.tasks
    e.pool.step(e.key(e.tasks[0]), (), "look around")
    e.pool.step(e.key(e.tasks[1]), (), "look around")
    pids = [s.instance.pid for s in e.pool._slots]
    assert len(pids) == 2 and set(pids) <= scienceworld_jvms() - before and set(pids) <= set(live_pids())
    e.close()
    assert not any(pid_alive(p) for p in pids) and not set(live_pids()) & set(pids)
    with pytest.raises(RuntimeError, match="boom"):
        with ScienceWorldEnv(task="find-animal", variations=1, max_instances=1) as e2:
            e2.reset(seed=0)
            pids = [s.instance.pid for s in e2.pool._slots]
            raise RuntimeError("boom")
    assert pids and not any(pid_alive(p) for p in pids)
    assert scienceworld_jvms() - before == set()  # no java process of ours is left


CHILD = textwrap.dedent("""
    import json, time
    from concurrent.futures import ThreadPoolExecutor
    from mcts_agent.envs.text.scienceworld import ScienceWorldEnv
    env = ScienceWorldEnv(task="find-animal", variations=1, max_instances=1)
    env.reset(seed=0)
    ThreadPoolExecutor(1).submit(env.step, "look around").result()
    print(json.dumps([s.instance.pid for s in env.pool._slots]), flush=True)
    time.sleep(120)  # killed here, with a live JVM (no close() is ever called)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_a_running_process_stops_its_jvms(sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            # Ctrl-C semantics even when this run was started in the background, where
                            # the shell ignores SIGINT and children would inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-2000:]
        pids = json.loads(line)
        assert pids and all(pid_alive(p) for p in pids)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -sig, proc.stderr.read()[-2000:]
    assert not any(pid_alive(p) for p in pids)


@pytest.mark.model
def test_a_real_model_search_through_the_cli(tmp_path: Path) -> None:
    before = scienceworld_jvms()
    out_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "mcts_agent.cli.main", "--quiet", "search",
                           "--env", "scienceworld-find-living-thing", "--limit", "1", "--algo", "greedy",
                           "--algo", "mcts", "--simulations", "2", "--branching", "2", "--max-steps", "2",
                           "--max-step-tokens", "16", "--out", str(out_dir)], capture_output=True, text=True, timeout=300)
    if "ModelLoadError" in done.stderr:
        pytest.skip(f"embedded model unavailable: {done.stderr[-500:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    for algo in ("greedy", "mcts"):
        results = [json.loads(x) for x in (out_dir / algo / "results.jsonl").read_text().splitlines()]
        assert len(results) == 1 and isinstance(results[0]["correct"], bool)
        trees = (out_dir / algo / "trees.jsonl").read_text()
        assert "Your task is to find a(n) living thing" in trees
    assert scienceworld_jvms() - before == set()  # the CLI's JVMs ended with it

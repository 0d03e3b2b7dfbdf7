"""Branching by replay: a world that cannot be copied, reached again by reset + replaying the action prefix."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from mcts_agent.env import Branching, EnvState, Task
from mcts_agent.envs.agent import AgentEnv, Outcome
from mcts_agent.errors import ConfigError
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.replay import ReplayPool
from mcts_agent.search import SearchConfig, run_search


class World:
    """A live counter with a lock inside: it cannot be deep-copied, like a browser."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0

    def reset(self, task: str) -> None:
        self.total = 0

    def step(self, action: str) -> str:
        with self.lock:
            if action.startswith("add(") and action.endswith(")") and action[4:-1].lstrip("-").isdigit():
                self.total += int(action[4:-1])
                return f"The counter is {self.total}."
            if action == "submit()":
                return f"Submitted {self.total}."
            return f"Error: expected add(N) or submit(), got {action!r}."


class ReplayCounter(AgentEnv):
    branching = Branching.REPLAY

    def __init__(self, tasks: list[Task], **kw: Any) -> None:
        super().__init__(tasks, **kw)
        self.pool = ReplayPool(World, lambda w, t: w.reset(t), lambda w, a: w.step(a), capacity=8)

    def messages(self, task: Task) -> list[dict[str, str]]:
        return [{"role": "user", "content": task.question}]

    def start(self, task: Task) -> tuple[Any, Any]:
        return None, None

    def act(self, state: EnvState, action: str) -> Outcome:
        obs = self.pool.step(state.task.id, state.steps, action)
        done = obs.startswith("Submitted")
        return Outcome(obs, terminated=done, answer=obs.split()[-1].rstrip(".") if done else None)

    def verify_state(self, state: EnvState, task: Task) -> bool:
        return state.answer == task.answer


def script(prompt: str, i: int) -> str:
    n = prompt.count("The counter is")
    return "submit()" if n >= 2 else f"add({i + 1})"


def test_world_cannot_be_copied() -> None:
    with pytest.raises(TypeError):
        copy.deepcopy(World())


def test_search_over_a_replayed_world_matches_fresh_replays() -> None:
    tasks = [Task(id=f"t{i}", question=f"Reach {i + 3}.", answer=str(i + 3)) for i in range(3)]
    env = ReplayCounter(tasks, max_steps=4)
    trees = run_search(tasks, env, ScriptedBackend(script),
                       SearchConfig(algo="mcts", simulations=10, branching=2, env_workers=2))
    for tree in trees:
        for node in tree.nodes[1:]:
            fresh = World()
            for a in tree.steps(node.id):
                obs = fresh.step(a)
            assert node.observation == obs  # what replay showed equals a replay from scratch
    st = env.pool.stats
    assert st.reuse["prefix"] + st.reuse["exact"] > 0 and st.created <= 8
    assert st.replayed < st.steps * 2  # most steps start from an instance one action short
    assert any(env.verify_state(t.nodes[t.answer_node].state, task) for t, task in zip(trees, tasks))


def test_pool_capacity_is_validated_and_failed_steps_reset() -> None:
    with pytest.raises(ConfigError, match="ReplayPool capacity must be an int >= 1, got 0"):
        ReplayPool(World, lambda w, t: None, lambda w, a: None, capacity=0)
    calls = []

    def step(w: World, a: str) -> str:
        if a == "boom":
            raise RuntimeError("world crashed")
        return w.step(a)

    pool = ReplayPool(World, lambda w, t: (calls.append(t), w.reset(t)), step, capacity=1)
    pool.step("x", (), "add(1)")
    with pytest.raises(RuntimeError):
        pool.step("x", ("add(1)",), "boom")
    assert pool.step("x", ("add(1)",), "add(2)") == "The counter is 3."  # reset, replayed, stepped
    assert calls == ["x", "x"]


def test_checked_replay_raises_on_a_world_that_differs_and_start_returns_the_reset() -> None:
    from mcts_agent.replay import ReplayMismatch

    drift = {"on": False}

    def reset(w: World, t: str) -> str:
        w.reset(t)
        w.total = 100 if drift["on"] else 0  # a world that does not come back the same
        return f"The counter is {w.total}."

    pool = ReplayPool(World, reset, lambda w, a: w.step(a), capacity=1, fingerprint=lambda r: r)
    assert pool.start("x") == "The counter is 0."
    prints = ["The counter is 0.", pool.step("x", (), "add(1)", expect=["The counter is 0."])]
    assert prints[1] == "The counter is 1." and pool.stats.reuse["exact"] == 1  # start left the instance ready
    assert pool.step("x", ("add(1)",), "add(2)", expect=prints) == "The counter is 3."
    with pytest.raises(ReplayMismatch, match="replay diverged at step 1: recorded 'The counter is 9.'"):
        pool.step("x", ("add(1)",), "add(2)", expect=["The counter is 0.", "The counter is 9."])  # reused instance
    drift["on"] = True
    with pytest.raises(ReplayMismatch, match="step 0") as e:
        pool.step("x", ("add(1)",), "add(2)", expect=prints)  # reset + replay sees another world
    assert (e.value.index, e.value.got) == (0, "The counter is 100.") and pool.stats.mismatches == 2
    with pytest.raises(ConfigError, match="needs a pool built with fingerprint="):
        ReplayPool(World, reset, lambda w, a: w.step(a)).step("x", (), "add(1)", expect=[])


def test_use_lends_an_idle_instance_and_drops_its_replay_state() -> None:
    pool = ReplayPool(World, World.reset, World.step, capacity=2)
    assert pool.step("t", ("add(2)",), "add(3)") == "The counter is 5."
    seen = pool.use(lambda w: w.total)  # the only instance, lent as it is
    assert seen == 5 and pool.stats.created == 1 and pool.stats.steps == 1
    r0 = pool.stats.replayed
    assert pool.step("t", ("add(2)", "add(3)"), "add(1)") == "The counter is 6."  # dropped: reset + replay both
    assert pool.stats.resets == 2 and pool.stats.replayed - r0 == 2
    pool.close()

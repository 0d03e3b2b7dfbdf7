"""The multi-turn contract on the demo counter world: chat prompts, observations in trees, branching."""

from __future__ import annotations

import json
import re

import pytest
from gymnasium.utils.env_checker import check_env

from mcts_agent import envs
from mcts_agent.env import EnvState, RewardMode, SearchEnv, Task
from mcts_agent.envs.agent import Outcome
from mcts_agent.envs.demo import CounterEnv, counter_tasks
from mcts_agent.errors import EnvError
from mcts_agent.io import load_trees, save_trees
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.search import SearchConfig, run_search
from mcts_agent.training.common import reward_correct


def target_of(prompt: str) -> int:
    return int(re.search(r"Bring the counter to (\d+)\.", prompt).group(1))


def total_of(prompt: str) -> int:
    found = re.findall(r"The counter is (-?\d+)\.", prompt)
    return int(found[-1]) if found else 0


def oracle(prompt: str, i: int) -> str:
    """Adds up to 9 at a time, then submits; sample i > 0 sometimes takes a wrong step."""
    gap = target_of(prompt) - total_of(prompt)
    if gap == 0:
        return "submit()"
    step = max(-9, min(9, gap))
    return f"add({step})" if i % 3 == 0 else f"add({step - 1 if step > 1 else step})"


def test_counter_env_is_a_search_env_and_passes_check_env() -> None:
    env = envs.make("demo/counter", n=2)
    assert isinstance(env, SearchEnv) and env.turn_based
    check_env(env, skip_render_check=True)


def test_actions_are_assistant_turns_and_observations_tool_turns() -> None:
    env = CounterEnv(n=1)
    backend = ScriptedBackend(lambda p, i: "")
    state = env.initial_state(env.tasks[0])
    s1, *_ = env.transition(state, "add(3)")
    s2, *_ = env.transition(s1, "add(x)")
    prompt = env.policy_prompt(s2, backend.format_chat)
    assert prompt.endswith("Tool: Error: expected add(N) with N in -9..9 or submit(), got 'add(x)'.\nAssistant: ")
    assert "Assistant: add(3)\nTool: The counter is 3.\nAssistant: add(x)\n" in prompt
    assert state.turns == () and s1.payload == {"total": 3} and s2.payload == {"total": 3}  # branching leaves states alone


def test_malformed_action_is_an_error_observation_and_the_episode_goes_on() -> None:
    env = CounterEnv(n=1, max_steps=3)
    env.reset(options={"task_index": 0})
    for bad in ("", "add(99)", "import os", "submit(1)"):
        env.reset(options={"task_index": 0})
        obs, reward, term, trunc, _ = env.step(bad)
        assert obs.startswith("Error: expected add(N)") and not term and not trunc and reward == 0.0


def test_state_round_trips_through_json() -> None:
    env = CounterEnv(n=1)
    s, *_ = env.transition(env.initial_state(env.tasks[0]), "add(4)")
    back = EnvState.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and env.transition(back, "add(1)")[0].payload == {"total": 5}


@pytest.mark.parametrize("algo", ["mcts", "greedy", "bon", "sc", "beam"])
def test_search_solves_the_counter_with_an_oracle(algo: str) -> None:
    env = CounterEnv(n=4, reward_mode="outcome", max_steps=6)
    backend = ScriptedBackend(oracle)
    trees = run_search(env.tasks, env, backend, SearchConfig(algo=algo, simulations=24, branching=2, samples=2,
                                                             beam_width=2, temperature=0.8), env_id="demo/counter")
    for tree, task in zip(trees, env.tasks):
        node = tree.nodes[tree.answer_node]
        assert env.verify_state(node.state, task), (algo, tree.answer, task.answer)
        assert tree.meta["reward_mode"] == "outcome" and tree.meta["env_id"] == "demo/counter"


def test_trees_record_observations_and_the_exact_prompts_the_policy_saw(tmp_path) -> None:
    env = CounterEnv(n=2, max_steps=5)
    backend = ScriptedBackend(oracle)
    trees = run_search(env.tasks, env, backend, SearchConfig(algo="mcts", simulations=8, branching=2))
    seen = {r.prompt for batch in backend.batches for r in batch}
    save_trees(tmp_path / "t.jsonl", trees)
    for tree in load_trees(tmp_path / "t.jsonl"):
        assert all(n.observation for n in tree.nodes[1:])  # every action got the world's reply
        expanded = [n for n in tree.nodes if n.children]
        assert expanded and all(tree.prompt(n.id) in seen for n in expanded)
        assert tree.meta["reward_mode"] == "none"
        for n in tree.terminals():  # evaluation trees: rewards say nothing about correctness
            assert n.reward == 0.0 and reward_correct(tree, n) is None


def test_an_action_ended_by_the_model_is_finished_in_turn_based_envs() -> None:
    env = CounterEnv(n=1, max_steps=4)
    trees = run_search(env.tasks, env, ScriptedBackend(oracle), SearchConfig(algo="mcts", simulations=2, branching=1))
    assert not any(n.truncated for n in trees[0].nodes[1:])
    cut = run_search(env.tasks, env, ScriptedBackend(lambda p, i: "add(1) and a very long tail"),
                     SearchConfig(algo="mcts", simulations=1, branching=1, max_step_tokens=8))
    assert all(n.truncated for n in cut[0].nodes[1:])  # cut by max_tokens: not a finished action


class TaggedCounter(CounterEnv):
    """Actions end at a closing tag that stays part of the action."""

    stop = ("</act>",)
    keep_stop = True

    def act(self, state: EnvState, action: str) -> Outcome:
        return super().act(state, action.removeprefix("<act>").removesuffix("</act>"))


def test_a_kept_stop_string_stays_in_the_action() -> None:
    env = TaggedCounter(n=1, max_steps=2)
    backend = ScriptedBackend(lambda p, i: "<act>add(2)</act> trailing words")
    trees = run_search(env.tasks, env, backend, SearchConfig(algo="greedy"))
    assert backend.batches[0][0].stop == ("</act>",)
    node = trees[0].nodes[1]
    assert node.action == "<act>add(2)</act>" and node.observation == "The counter is 2."


def test_time_budget_is_honoured_inside_a_round() -> None:
    env = CounterEnv(tasks=[Task("t", "Bring the counter to 5.", "5", {"target": 5})], delay=0.25, max_steps=3)
    backend = ScriptedBackend(lambda p, i: f"add({i % 9 + 1})")
    trees = run_search(env.tasks, env, backend, SearchConfig(algo="mcts", simulations=4, branching=8, time_budget=0.3,
                                                             merge_duplicates=False))
    assert 1 <= len(trees[0].nodes[0].children) < 8  # steps not started by the deadline were skipped


def test_reward_correct_is_unknown_on_evaluation_trees_of_any_env() -> None:
    env = CounterEnv(n=2)
    trees = run_search(env.tasks, env, ScriptedBackend(oracle), SearchConfig(algo="greedy"))
    assert all(reward_correct(t, n) is None for t in trees for n in t.terminals())
    env_out = CounterEnv(n=2, reward_mode=RewardMode.OUTCOME)
    trees = run_search(env_out.tasks, env_out, ScriptedBackend(oracle), SearchConfig(algo="greedy"))
    assert all(reward_correct(t, n) is True for t in trees for n in t.terminals())


def test_counter_loader_and_bad_delay() -> None:
    assert [t.id for t in envs.load_tasks("demo/counter", limit=3)] == [t.id for t in counter_tasks(3)]
    with pytest.raises(EnvError, match="delay must be >= 0 seconds, got -1"):
        CounterEnv(delay=-1)

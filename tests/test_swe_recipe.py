"""The SWE-Search recipe: value agent, discriminator, and the whole loop (scripted and with the real model)."""

from __future__ import annotations

import pytest

from mcts_agent import envs
from mcts_agent.critic import NodeView
from mcts_agent.env import Task
from mcts_agent.envs.swe.oracle import oracle_script
from mcts_agent.envs.swe.recipe import SWEValueCritic, discriminate, progress_text, read_vote, swe_search
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.search import SearchConfig

pytest.importorskip("libcst")


@pytest.mark.parametrize("text, want", [
    ("Candidate 2 fixes it.\nAnswer: 2", 1), ("answer = candidate 3", 2), ("I pick 1", 0), ("Answer: 9", None),
    ("no idea", None), ("Answer: 2 ... no, Answer: 1", 0)])
def test_read_vote(text: str, want: int | None) -> None:
    assert read_vote(text, 3) == want


def test_discriminate_votes_and_breaks_ties_by_order() -> None:
    votes = {0: "Answer: 2", 1: "Answer: 3", 2: "Answer: 2", 3: "gibberish", 4: "Answer: 3"}
    backend = ScriptedBackend(lambda prompt, i: votes[i])
    choice = discriminate(backend, "issue", ["p1", "p2", "p3"], judgements=5)
    assert choice.votes == (1, 2, 1, None, 2) and choice.index == 1  # a 2-2 tie goes to the earlier candidate
    assert len(backend.batches) == 1 and backend.batches[0][0].n == 5  # one request, five samples
    assert discriminate(backend, "issue", ["only"]).index == 0 and len(backend.batches) == 1
    with pytest.raises(ValueError):
        discriminate(backend, "issue", [])


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return envs.load_tasks("swe/bench", limit=2)


def test_the_value_agent_reads_turns_and_the_patch(tasks: list[Task]) -> None:
    env = envs.make("swe/bench", tasks=tasks)
    try:
        env.reset(options={"task": tasks[0]})
        state, *_ = env.transition(env.snapshot(), 'create("NOTE.txt", "hello\\n")')
        node = NodeView(prompt="", question=tasks[0].question, steps=state.steps, answer=None, terminal=False,
                        state=state)
        text = progress_text(node)
        assert 'create("NOTE.txt"' in text and "created NOTE.txt" in text and "+hello" in text
        backend = ScriptedBackend(lambda prompt, i: "It is a start.\nScore: 3")
        critic = SWEValueCritic(backend)
        assert critic([node, node]) == [0.3, 0.3] and len(backend.batches) == 1
        assert critic.last_rationales == ["It is a start.", "It is a start."]
    finally:
        env.close()


def test_swe_search_picks_a_resolving_patch(tasks: list[Task]) -> None:
    oracle = oracle_script(tasks)

    def script(prompt: str, i: int) -> str:
        if "Score: N" in prompt:
            return "Looks right.\nScore: 8"
        if "Which candidate patch" in prompt:
            return "Answer: 1"
        return oracle(prompt, i)

    env = envs.make("swe/bench", tasks=tasks)
    try:
        cfg = SearchConfig(algo="mcts", simulations=3, branching=2, max_step_tokens=100_000, max_trees_in_flight=2)
        trees, chosen = swe_search(tasks, env, ScriptedBackend(script), cfg)
        assert len(trees) == len(chosen) == 2
        for task, patch in zip(tasks, chosen):
            assert env.grade(task, patch).resolved
    finally:
        env.close()


@pytest.mark.model
def test_the_recipe_runs_with_the_embedded_model(tasks: list[Task]) -> None:
    """The real model through the real env, value agent and discriminator (it resolves nothing at 135M)."""
    from mcts_agent.llm import load_backend

    env = envs.make("swe/bench", tasks=tasks[:1], max_steps=2)
    backend = load_backend("transformers", seed=0)
    try:
        cfg = SearchConfig(algo="mcts", simulations=2, branching=2, max_step_tokens=48, max_trees_in_flight=1)
        trees, chosen = swe_search(tasks[:1], env, backend, cfg, judgements=2)
        assert len(trees[0].nodes) >= 3 and isinstance(chosen[0], str)
        observations = [n.state.turns[-1].observation for n in trees[0].nodes[1:] if n.state and n.state.turns]
        assert observations  # every model action got an answer from the world (most: error observations)
        assert isinstance(env.grade(tasks[0], chosen[0]).resolved, bool)
    finally:
        backend.close()
        env.close()

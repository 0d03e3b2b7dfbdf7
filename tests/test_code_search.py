"""Search on the code environments: trees, sandboxed verdicts, and hidden tests kept from search."""

from __future__ import annotations

import json

import pytest

from mcts_agent import envs
from mcts_agent.envs.code.humaneval import load_humaneval
from mcts_agent.io import load_trees
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.runner import run_tasks
from mcts_agent.search import SearchConfig

RIGHT = ("    for i, a in enumerate(numbers):\n        for j, b in enumerate(numbers):\n"
         "            if i != j and abs(a - b) < threshold:\n                return True\n    return False\n```\n")
WRONG = "    return False\n```\n"


@pytest.fixture(scope="module")
def task():
    t = load_humaneval(limit=1)[0]
    assert t.meta["entry_point"] == "has_close_elements"
    return t


@pytest.mark.parametrize("algo", ["greedy", "mcts", "bon"])
def test_search_humaneval_right_and_wrong(tmp_path, task, algo: str) -> None:
    env = envs.make("code/humaneval")
    prompts: list[str] = []

    def script(prompt: str, i: int) -> str:
        prompts.append(prompt)
        return RIGHT if i % 2 == 0 else WRONG

    cfg = SearchConfig(algo=algo, simulations=2, branching=2, samples=2, answer_rule="q")
    from mcts_agent.critics import make_critic
    critic = make_critic("none") if algo != "greedy" else None
    s = run_tasks([task], env, ScriptedBackend(script), cfg, tmp_path, critic, env_id="code/humaneval")
    result = json.loads((tmp_path / "results.jsonl").read_text())
    tree = load_trees(tmp_path / "trees.jsonl")[0]
    assert any(n.terminal for n in tree.nodes)
    if algo == "greedy":  # sample 0 of the greedy request is the right body
        assert result["correct"] is True and s.correct == 1
    hidden = task.answer.strip().splitlines()[-1]
    assert hidden and not any(hidden in p for p in prompts)  # hidden tests never reach the policy
    assert hidden not in tree.to_json()


def test_wrong_solution_fails_in_the_sandbox(tmp_path, task) -> None:
    env = envs.make("code/humaneval")
    run_tasks([task], env, ScriptedBackend(lambda p, i: WRONG), SearchConfig(algo="greedy"), tmp_path)
    assert json.loads((tmp_path / "results.jsonl").read_text())["correct"] is False

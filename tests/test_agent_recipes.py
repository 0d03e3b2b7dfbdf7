"""Training data from agent-env trees: prompts read back from the trees, observations inside completions."""

from __future__ import annotations

import re

from mcts_agent.envs.demo import CounterEnv
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.search import SearchConfig, run_search
from mcts_agent.training.pairs import PairConfig, extract_pairs
from mcts_agent.training.sft_data import rejection_sampling_sft, revision_trajectories
from mcts_agent.training.common import reward_correct


def script(prompt: str, i: int) -> str:
    """Sample 0 heads for the target; other samples overshoot (and so fail within the budget)."""
    target = int(re.search(r"Bring the counter to (\d+)\.", prompt).group(1))
    found = re.findall(r"The counter is (-?\d+)\.", prompt)
    total = int(found[-1]) if found else 0
    if total == target:
        return "submit()"
    return f"add({min(9, target - total)})" if i == 0 else "add(9)"


def trees(chat: bool = True):
    env = CounterEnv(n=3, seed=4, reward_mode="outcome", max_steps=4)
    backend = ScriptedBackend(script)
    out = run_search(env.tasks, env, backend, SearchConfig(algo="mcts", simulations=24, branching=2))
    return out, backend


def test_truncated_agent_episodes_count_as_failures() -> None:
    ts, _ = trees()
    leaves = [(t, n) for t in ts for n in t.leaves() if n.truncated]
    assert leaves and all(reward_correct(t, n) is False for t, n in leaves)


def test_pairs_take_prompts_from_the_tree() -> None:
    ts, backend = trees()
    seen = {r.prompt for batch in backend.batches for r in batch}
    pairs = extract_pairs(ts, PairConfig(delimiter="", q_margin=0.0))
    assert pairs
    for p in pairs:
        assert p.prompt in seen  # exactly the text the policy continued
        assert p.prompt.endswith("Assistant: ") and "Tool: The counter is" in p.prompt or p.depth == 1
        assert p.chosen != p.rejected and re.fullmatch(r"add\(-?\d+\)|submit\(\)", p.chosen)


def test_revision_trajectories_splice_turns_with_their_observations() -> None:
    ts, backend = trees()
    seen = {r.prompt for batch in backend.batches for r in batch}
    ds = revision_trajectories(ts)
    assert len(ds) > 0
    for row in ds:
        assert row["prompt"] in seen
        assert row["completion"].startswith("Wait, that step looks wrong.")
        assert row["completion"].rstrip().endswith("submit()")
        if row["completion"].count("add(") > 1:  # a multi-turn good path carries the world's replies
            assert "Tool: The counter is" in row["completion"]


def test_correct_paths_interleave_observations() -> None:
    ts, _ = trees()
    ds = rejection_sampling_sft(ts, delimiter="")
    for row in ds:
        turns = row["completion"].count("\nAssistant: ") + 1
        assert turns == row["depth"] and row["completion"].endswith("submit()")


def test_the_example_recipes_are_valid_configs() -> None:
    from pathlib import Path

    from mcts_agent import envs
    from mcts_agent.training.iterate_config import IterateConfig

    root = Path(__file__).resolve().parents[1] / "examples"
    for name, method in (("iterate_bfcl.json", "dpo"), ("iterate_textcraft.json", "revision")):
        cfg = IterateConfig.load(root / name)
        assert cfg.method == method and envs.make(cfg.env).turn_based

"""The self-improvement recipes on agent envs, with the real embedded model (tiny sizes).

MCTS-DPO for tool use on BFCL (iterative reinforced fine-tuning for tool use) and Agent-R
(revision trajectories + correct paths, SFT) on TextCraft. The 135M model rarely solves a
task, so these runs prove the loop end to end (search with outcome rewards -> data read
back from the trees -> TRL training -> held-out evaluation), not a gain.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcts_agent.training.iterate import run_iterate
from mcts_agent.training.iterate_config import IterateConfig

pytestmark = pytest.mark.model

BFCL_DPO = {
    "env": "tool/bfcl-simple_python", "train_tasks": 2, "eval_tasks": 2, "iterations": 1, "max_steps": 2,
    "train_split": "test", "eval_seed": 7, "critic": "self-eval:0.5,verifier:0.5",
    "search": {"algo": "mcts", "simulations": 3, "branching": 3, "max_step_tokens": 48},
    "eval_algos": ["greedy"], "eval_search": {"max_step_tokens": 48},
    "pairs": {"q_margin": 0.0},
    "dpo": {"max_steps": 1, "batch_size": 2, "max_length": 1024, "learning_rate": 1e-4},
}
TEXTCRAFT_AGENT_R = {
    "env": "textcraft", "method": "revision", "train_tasks": 2, "eval_tasks": 1, "iterations": 1, "max_steps": 3,
    "train_split": "train", "eval_split": "test", "critic": "self-eval:0.5,verifier:0.5",
    "search": {"algo": "mcts", "simulations": 3, "branching": 2, "max_step_tokens": 24},
    "eval_algos": ["greedy"], "eval_search": {"max_step_tokens": 24},
    "sft": {"max_steps": 1, "batch_size": 2, "max_length": 1024},
}


def test_mcts_dpo_for_tool_use_on_bfcl(tmp_path: Path) -> None:
    result = run_iterate(IterateConfig(**{**BFCL_DPO, "out_dir": str(tmp_path / "bfcl")}))
    row = result["history"][1]
    trees = [json.loads(x) for x in (tmp_path / "bfcl" / "iter_1" / "search" / "trees.jsonl").read_text().splitlines()]
    assert all(t["meta"]["reward_mode"] == "outcome" and t["meta"]["turn_based"] for t in trees)
    assert row["pairs"]["examples"] >= 1 and row["train"]["steps"] == 1  # pairs from the trees, a real DPO step
    import datasets

    ds = datasets.load_from_disk(str(tmp_path / "bfcl" / "iter_1" / "pairs" / "dataset"))
    contexts = {t["nodes"]["context"][0] for t in trees}
    assert all(any(p.startswith(c) for c in contexts) for p in ds["prompt"])  # prompts read back from the trees
    assert 0.0 <= row["eval"]["greedy"]["accuracy"] <= 1.0


def test_agent_r_revisions_on_textcraft(tmp_path: Path) -> None:
    result = run_iterate(IterateConfig(**{**TEXTCRAFT_AGENT_R, "out_dir": str(tmp_path / "tc")}))
    row = result["history"][1]
    stats = json.loads((tmp_path / "tc" / "iter_1" / "pairs" / "stats.json").read_text())
    assert set(stats) >= {"revisions", "correct_paths"} or "reason" in stats
    if row["pairs"]["examples"]:  # the model found something to learn from: a real SFT step
        assert row["train"]["steps"] == 1
    else:  # nothing solved, no revision: the iteration keeps the policy and still evaluates
        assert row["train"]["skipped"]
    assert "greedy" in row["eval"]


def test_agent_r_revisions_train_the_real_model(tmp_path: Path) -> None:
    """TextCraft trees with both failing and solved paths (a scripted policy that sometimes slips),
    revision trajectories read back from them, one real TRL SFT step on the embedded model."""
    from mcts_agent import envs
    from mcts_agent.critics import make_critic
    from mcts_agent.envs.text.textcraft import oracle_actions, oracle_script
    from mcts_agent.llm.model_store import resolve_model
    from mcts_agent.llm.scripted import ScriptedBackend
    from mcts_agent.search import SearchConfig, run_search
    from mcts_agent.training.common import recorded_prompt
    from mcts_agent.training.iterate import revision_dataset
    from mcts_agent.training.sft import SFTTrainConfig, train_sft

    tasks = sorted(envs.load_tasks("textcraft", split="train"), key=lambda t: len(oracle_actions(t)))[:3]
    oracle = oracle_script(tasks)

    def script(prompt: str, i: int) -> str:  # the second sample of every expansion slips
        return "get 1 unicorn" if i == 1 else oracle(prompt, i)

    env = envs.make("textcraft", reward_mode="outcome", max_steps=3)  # a slip in a 3-action plan fails it
    trees = run_search(tasks, env, ScriptedBackend(script), SearchConfig(algo="mcts", simulations=30, branching=2),
                       critic=make_critic("verifier", None, env), env_id="textcraft")
    ds, stats = revision_dataset(trees, recorded_prompt(delimiter=""), "")
    assert stats["revisions"] >= 1 and stats["correct_paths"] >= 1
    revision = next(r for r in ds if r["completion"].startswith("Wait, that step looks wrong."))
    assert revision["prompt"].endswith("User: Could not find unicorn\nAssistant: ")  # cut after the bad turn
    assert "\nUser: Crafted " in revision["completion"]  # the good path, with the world's replies
    cfg = SFTTrainConfig(max_steps=1, batch_size=2, max_length=1024, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                         output_dir=str(tmp_path / "sft"))
    result = train_sft(resolve_model(), ds, cfg)
    assert result.steps == 1 and result.examples == len(ds)

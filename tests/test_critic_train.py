"""Critic labels from trees (MC, Q, outcome; statistics) and real training of a PRM / value model
on a tiny random Llama (built locally with the embedded tokenizer, no download)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from mcts_agent.errors import ConfigError, TrainingDataError
from mcts_agent.training.critic_train import CriticTrainConfig, critic_examples, split_trees, train_critic
from mcts_agent.training.sft_data import StepLabelConfig, label_stats, prm_path_targets, prm_step_labels, prm_stepwise, step_labels
from tests.train_golden import arithmetic_tree, embedded_model_dir, golden_tree


def tiny_llama(folder: Path) -> str:
    """A 2-layer, 32-wide random Llama with the embedded model's tokenizer and chat template."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return str(folder)


def training_trees() -> list:
    """Two golden trees and six arithmetic ones (whose search critic scored both answers 0.6 / 0.4)."""
    trees = [arithmetic_tree(f"a{i}", a, b) for i, (a, b) in enumerate([(2, 3), (4, 5), (10, 7), (6, 6), (1, 8), (3, 3)])]
    for t in trees:
        t.nodes[1].value, t.nodes[2].value = 0.6, 0.4
    return [golden_tree(f"g{i}") for i in range(2)] + trees


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_llama(tmp_path_factory.mktemp("tiny"))


# ----- labels -------------------------------------------------------------------------------------
def test_mc_labels_are_the_share_of_correct_rollouts_below_each_step() -> None:
    tree = golden_tree()
    assert step_labels(tree, StepLabelConfig(label="mc")) == [None, 0.5, 0.0, None, 1.0, 0.0, 0.0]
    tree.nodes[4].merged = 3  # the right answer was sampled three times
    assert step_labels(tree, StepLabelConfig(label="mc")) == [None, 0.75, 0.0, None, 1.0, 0.0, 0.0]
    assert step_labels(tree, StepLabelConfig(label="outcome")) == [None, 1.0, 0.0, None, 1.0, 0.0, 0.0]
    assert step_labels(tree, StepLabelConfig(label="q", min_visits=3)) == [None, 0.75, 0.25, None, None, None, 0.25]
    ds = prm_step_labels([tree], StepLabelConfig(label="mc"))
    assert [(r["node_id"], r["label"], r["steps"], r["question"]) for r in ds][:2] == [
        (1, 0.75, ["Add 2 and 3."], "What is 2+3?"), (2, 0.0, ["Multiply 2 by 3."], "What is 2+3?")]
    assert [r["labels"] for r in prm_stepwise([tree], StepLabelConfig(label="mc", threshold=0.7))] == [
        [True, True], [True, False], [False, False]]


def test_path_targets_and_label_stats() -> None:
    ds = prm_path_targets([golden_tree()], StepLabelConfig(label="mc"))
    assert [(r["node_id"], r["steps"], r["targets"], r["depths"]) for r in ds] == [
        (4, ["Add 2 and 3.", "2+3=5. The answer is 5"], [0.5, 1.0], [1, 2]),
        (5, ["Add 2 and 3.", "2+3=6. The answer is 6"], [0.5, 0.0], [1, 2]),
        (6, ["Multiply 2 by 3.", "2*3=6. The answer is 6"], [0.0, 0.0], [1, 2])]
    q = prm_path_targets([golden_tree()], StepLabelConfig(label="q", min_visits=3))
    assert [r["targets"] for r in q] == [[0.75, None], [0.75, None], [0.25, 0.25]]
    stats = label_stats([0.5, 1.0, 0.0, None, 0.25], [1, 2, 2, 1, 1])
    assert stats == {"count": 4, "positive_rate": 0.5, "mean": 0.4375,
                     "by_depth": {"1": {"count": 2, "positive_rate": 0.5, "mean": 0.375},
                                  "2": {"count": 2, "positive_rate": 0.5, "mean": 0.5}}}
    evaluation = golden_tree()
    evaluation.meta["reward_mode"] = "none"
    with pytest.raises(TrainingDataError, match=re.escape("no step could be labelled in 1 tree(s) (label='mc'")):
        prm_path_targets([evaluation], StepLabelConfig(label="mc"))


def test_split_trees_holds_out_whole_tasks_deterministically() -> None:
    trees = training_trees()
    train, held = split_trees(trees, 0.25, seed=0)
    assert len(held) == 2 and not {t.task_id for t in train} & {t.task_id for t in held}
    assert [t.tree_id for t in split_trees(trees, 0.25, seed=0)[1]] == [t.tree_id for t in held]
    assert split_trees(trees[:1], 0.5, seed=0) == (trees[:1], [])


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "orm"}, "CriticTrainConfig.kind must be one of ('prm', 'value'), got 'orm'"),
    ({"label": "soft"}, "StepLabelConfig.label must be one of ('q', 'outcome', 'mc'), got 'soft'"),
    ({"val_fraction": 1.0}, "CriticTrainConfig.val_fraction must be in [0, 1), got 1.0"),
    ({"head_learning_rate": 0}, "CriticTrainConfig.head_learning_rate must be a finite number > 0, got 0"),
    ({"template": "no slot"}, "PathFormat.template must contain '{question}', got 'no slot'"),
])
def test_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        CriticTrainConfig(**kwargs)


def test_examples_score_each_step_at_its_separator(tiny: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    prm, stats = critic_examples([golden_tree()], CriticTrainConfig(kind="prm"), tok)
    ids, positions, targets = prm[0]
    assert targets == [0.5, 1.0] and positions[-1] == len(ids) - 1 and tok.decode(ids[positions[0]]) == "\n"
    assert stats["examples"] == 3 and stats["by_depth"]["1"]["count"] == 3
    value, vstats = critic_examples([golden_tree()], CriticTrainConfig(kind="value"), tok)
    assert [t for _, _, t in value] == [[0.75], [0.25], [0.5], [1.0], [0.0], [0.25]]
    assert all(p == [len(i) - 1] for i, p, _ in value) and vstats["count"] == 6


# ----- training -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["prm", "value"])
def test_tiny_training_changes_parameters_lowers_loss_and_saves_a_loadable_critic(tiny: str, tmp_path: Path,
                                                                                    kind: str) -> None:
    from safetensors.torch import load_file

    from mcts_agent.critics import make_critic
    from mcts_agent.training.critic_train import tree_views

    cfg = CriticTrainConfig(kind=kind, max_steps=40, batch_size=4, learning_rate=1e-2, head_learning_rate=5e-2,
                            lora_r=4, lora_alpha=8, lora_dropout=0.0, val_fraction=0.25, output_dir=str(tmp_path / kind))
    result = train_critic(tiny, training_trees(), cfg)
    assert result.steps == 40 and len(result.losses) == 40
    assert result.loss_after < result.loss_before, (result.loss_before, result.loss_after)
    before = load_file(str(Path(tiny) / "model.safetensors"))
    after = load_file(str(Path(result.critic_dir) / "model" / "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[name], after[name.removeprefix("model.")])  # LoRA merged into the backbone
    assert torch.equal(before["model.embed_tokens.weight"], after["embed_tokens.weight"])  # not an adapted module
    saved = json.loads((tmp_path / kind / "train_result.json").read_text())
    assert saved["kind"] == kind and saved["label_stats"]["count"] > 0
    assert saved["val"]["trees"] == 2 and set(saved["val"]["trained"]) == {"step_auc", "answer_auc", "steps", "answers"}
    assert "value" in saved["val"]["recorded"]["step_auc"]  # the search critic's AUC on the same held-out trees
    assert len((tmp_path / kind / "train_log.jsonl").read_text().splitlines()) == 40

    critic = make_critic(kind, path=result.critic_dir)
    values = critic(tree_views(golden_tree()))
    assert len(values) == 6 and all(0.0 < v < 1.0 for v in values)

    again = train_critic(result.critic_dir, training_trees(), CriticTrainConfig(
        kind=kind, max_steps=2, batch_size=4, lora_dropout=0.0, val_fraction=0.25, output_dir=str(tmp_path / "more")))
    assert abs(again.loss_before - result.loss_after) < 1e-4  # continues from the saved head and backbone


# ----- the self-evolving critic in iterate ----------------------------------------------------------
@pytest.mark.model
def test_iterate_trains_the_critic_each_iteration_and_searches_with_it(tmp_path: Path) -> None:
    from mcts_agent.io import load_trees
    from tests.test_iterate import _run

    cfg = {
        "env": "math/arithmetic", "train_tasks": 3, "eval_tasks": 2, "iterations": 2, "max_steps": 3,
        "critic": "trained:0.5,verifier:0.5", "eval_critic": "trained", "eval_algos": ["mcts"],
        "search": {"algo": "mcts", "simulations": 2, "branching": 3, "max_step_tokens": 24, "max_trees_in_flight": 3},
        "eval_search": {"simulations": 2, "branching": 2, "max_step_tokens": 24},
        "pairs": {"q_margin": 0.0}, "dpo": {"max_steps": 1, "batch_size": 2, "max_length": 192},
        "critic_train": {"kind": "prm", "max_steps": 2, "batch_size": 2, "max_length": 192, "val_fraction": 0.0,
                         "logging_steps": 1},
    }
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text(json.dumps({**cfg, "out_dir": str(tmp_path / name)}))
    done = _run(tmp_path / "a.json")
    assert done is not None and done.returncode == 0, done.stderr[-3000:]
    a = tmp_path / "a"
    first, second = (json.loads((a / f"iter_{k}" / "critic" / "DONE.json").read_text()) for k in (1, 2))
    assert first["steps"] == second["steps"] == 2 and first["kind"] == "prm" and first["label_stats"]["count"] > 0
    meta = json.loads((Path(second["critic_dir"]) / "critic_config.json").read_text())
    assert meta["base_model"] == str(a / "iter_1" / "critic" / "critic" / "model")  # continues iteration 1's critic
    # iteration 1 searched with self-eval (no critic yet), iteration 2 with iteration 1's PRM
    scored = lambda k: {m for t in load_trees(a / f"iter_{k}" / "search" / "trees.jsonl") for n in t.nodes for m in n.critic_scores}
    assert "prm" not in scored(1) and "prm" in scored(2)
    assert "critic:prm" in json.loads((a / "iter_2" / "monitors.json").read_text())["exploitation"]["step_auc"]

    # kill -9 inside iteration 2's critic training (one step logged), then resume: the same result
    log = tmp_path / "b" / "iter_2" / "critic" / "train_log.jsonl"
    _run(tmp_path / "b.json", inside=log)
    assert not (log.parent / "DONE.json").exists()
    resumed = _run(tmp_path / "b.json")
    assert resumed is not None and resumed.returncode == 0, resumed.stderr[-3000:]
    strip = lambda rec: {k: v for k, v in rec.items() if k not in ("seconds", "critic_dir", "merged_dir")}
    ra, rb = (json.loads((tmp_path / d / "result.json").read_text())["history"] for d in ("a", "b"))
    assert [{k: strip(v) if isinstance(v, dict) else v for k, v in row.items()} for row in ra] == \
        [{k: strip(v) if isinstance(v, dict) else v for k, v in row.items()} for row in rb]


# ----- the CLI ------------------------------------------------------------------------------------
@pytest.mark.model
def test_cli_trains_a_critic_and_searches_with_it(tiny: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    from mcts_agent.io import load_trees, save_trees

    trees = tmp_path / "trees.jsonl"
    save_trees(trees, training_trees())
    cli = lambda *a: subprocess.run([sys.executable, "-m", "mcts_agent.cli.main", "--quiet", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=900)
    bad = cli("train-critic", "--trees", str(tmp_path / "nope.jsonl"), "--output-dir", str(tmp_path / "c"))
    assert bad.returncode == 2 and "--trees" in bad.stderr and "nope.jsonl" in bad.stderr
    assert not (tmp_path / "c").exists()
    done = cli("train-critic", "--trees", str(trees), "--model", tiny, "--kind", "value", "--max-steps", "3",
               "--batch-size", "4", "--output-dir", str(tmp_path / "c"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[0])["steps"] == 3
    critic_dir = tmp_path / "c" / "critic"
    assert f"--critic value:{critic_dir}" in done.stdout
    wrong = cli("search", "--env", "math/arithmetic", "--limit", "1", "--critic", f"prm:{critic_dir}",
                "--out", str(tmp_path / "s0"))
    assert wrong.returncode == 2 and "holds a 'value' critic" in wrong.stderr and not (tmp_path / "s0").exists()
    ran = cli("search", "--env", "math/arithmetic", "--limit", "2", "--algo", "mcts", "--simulations", "2",
              "--branching", "2", "--max-step-tokens", "24", "--critic", f"value:{critic_dir}:0.5,verifier:0.5",
              "--out", str(tmp_path / "s"))
    assert ran.returncode == 0, ran.stderr[-3000:]
    searched = load_trees(tmp_path / "s" / "mcts" / "trees.jsonl")
    scored = [n.critic_scores for t in searched for n in t.nodes if n.critic_scores]
    assert len(searched) == 2 and scored and all({"ensemble", "value", "verifier"} <= set(s) for s in scored)


def test_trained_critic_specs_parse_paths_and_weights(tmp_path: Path) -> None:
    from mcts_agent.critics import make_critic, parse_ensemble_spec
    from mcts_agent.errors import CriticError

    assert parse_ensemble_spec("self-eval:0.5,prm:/runs/c:0.5") == [("self-eval", 0.5), ("prm:/runs/c", 0.5)]
    assert parse_ensemble_spec("value:runs/v,verifier") == [("value:runs/v", 1.0), ("verifier", 1.0)]
    assert parse_ensemble_spec("prm:runs/x:2:1") == [("prm:runs/x:2", 1.0)]  # a path ending in ':2' keeps it
    with pytest.raises(CriticError, match=re.escape("critic 'prm' needs path= (a directory written by")):
        make_critic("prm")
    with pytest.raises(CriticError, match=re.escape(f"{tmp_path} is not a trained critic directory")):
        make_critic(f"prm:{tmp_path}")
    with pytest.raises(CriticError, match=re.escape("'value' needs a path, e.g. 'value:runs/critic'")):
        make_critic("self-eval:0.5,value:")


@pytest.mark.parametrize("kind", ["prm", "value"])
def test_shared_prefix_and_padded_batches_score_alike(tiny: str, tmp_path: Path, kind: str) -> None:
    from mcts_agent.critic import NodeView
    from mcts_agent.critics import make_critic

    result = train_critic(tiny, training_trees(), CriticTrainConfig(kind=kind, max_steps=2, batch_size=4, val_fraction=0.0,
                                                                    output_dir=str(tmp_path)))
    q = "What is 12 + 30?"
    views = [NodeView(prompt="", question=q, steps=tuple(s), answer=None, terminal=False) for s in (
        ["Add 12 and 30."], ["Add 12 and 30.", "12 + 30 = 42. The answer is 42"], ["Subtract 30 from 12."],
        ["Add 12 and 30.", "12 + 30 = 43. The answer is 43"])]
    shared = make_critic(kind, path=result.critic_dir)
    padded = make_critic(kind, path=result.critic_dir, share_prefix=False, prefill_tokens=40)  # several chunks
    a, b = shared(views), padded(views)
    assert shared.stats.shared_prefix_calls == 1 and padded.stats.shared_prefix_calls == 0
    assert a == pytest.approx(b, abs=1e-5) and len(set(round(v, 6) for v in a)) > 1
    alone = [shared([v])[0] for v in views]  # a node's score does not depend on its batch
    assert alone == pytest.approx(a, abs=1e-5)
    if kind == "prm":
        weakest = make_critic("prm", path=result.critic_dir, aggregate="min")(views)
        last = make_critic("prm", path=result.critic_dir)(views)
        assert all(w <= l + 1e-6 for w, l in zip(weakest, last)) and weakest[0] == pytest.approx(last[0], abs=1e-5)


@pytest.mark.parametrize("algo", ["mcts", "beam", "bon"])
def test_a_trained_critic_steers_every_critic_guided_search(tiny: str, tmp_path: Path, algo: str) -> None:
    from mcts_agent import envs
    from mcts_agent.critics import make_critic
    from mcts_agent.llm.scripted import ScriptedBackend
    from mcts_agent.search import SearchConfig
    from mcts_agent.search.driver import run_search

    result = train_critic(tiny, training_trees(), CriticTrainConfig(kind="prm", max_steps=1, batch_size=4, val_fraction=0.0,
                                                                    output_dir=str(tmp_path)))
    critic = make_critic("prm", path=result.critic_dir)
    env = envs.make("math/arithmetic", max_steps=3)
    tasks = envs.load_tasks("math/arithmetic", limit=2, seed=0)
    steps = ["Let me think.", "The answer is 4.", "The answer is 5."]
    backend = ScriptedBackend(lambda prompt, i: steps[i % 3])
    config = SearchConfig(algo=algo, simulations=3, branching=3, beam_width=2, samples=3, max_step_tokens=16)
    trees = run_search(tasks, env, backend, config, critic)
    scored = [n for t in trees for n in t.nodes if "prm" in n.critic_scores]
    assert scored and critic.stats.calls >= 1 and critic.stats.nodes == len(scored)
    assert all(n.value == n.critic_scores["prm"] for n in scored)

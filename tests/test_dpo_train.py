"""Step-level DPO on the real embedded model (tiny: 4 pairs, 3 steps, short sequences)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import datasets
import pytest
import torch

from mcts_agent.errors import ConfigError, ModelLoadError, TrainingDataError
from tests.train_golden import arithmetic_tree, embedded_model_dir
from mcts_agent.training.dpo import DPOTrainConfig, conservative_extra, train_dpo, visit_label_smoothing
from mcts_agent.training.pairs import PairConfig, extract_pairs, pairs_to_dataset


@pytest.fixture(scope="module")
def model_dir() -> str:
    return embedded_model_dir()


def _pairs(n: int) -> datasets.Dataset:
    trees = [arithmetic_tree(f"t{i}", a, b) for i, (a, b) in enumerate([(2, 3), (4, 5), (10, 7), (6, 6)][:n])]
    return pairs_to_dataset(extract_pairs(trees, PairConfig(q_margin=0.5, min_visits=2)))


def _margin(model_dir: str, ds: datasets.Dataset) -> float:
    """Mean log p(chosen | prompt) - log p(rejected | prompt) under the model at ``model_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def logp(prompt: str, completion: str) -> float:
        p = tok(prompt)["input_ids"]
        ids = torch.tensor([tok(prompt + completion)["input_ids"]])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0, :-1], dim=-1)
        targets = ids[0, 1:]
        return float(lp[torch.arange(len(targets)), targets][len(p) - 1:].sum())

    return sum(logp(r["prompt"], r["chosen"]) - logp(r["prompt"], r["rejected"]) for r in ds) / len(ds)


@pytest.mark.model
def test_tiny_dpo_run_lowers_loss_and_saves_a_loadable_policy(model_dir: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    ds = _pairs(4)
    assert len(ds) == 4
    cfg = DPOTrainConfig(max_steps=3, batch_size=4, learning_rate=5e-3, max_length=128, lora_r=8, lora_alpha=16,
                         lora_dropout=0.0, output_dir=str(tmp_path / "dpo"))
    result = train_dpo(None, ds, cfg)  # None: the embedded default model (model_dir)

    # step 1 runs before any update: policy == reference, so the loss is exactly log 2
    assert result.steps == 3 and len(result.losses) == 3
    assert result.initial_loss == pytest.approx(math.log(2), abs=1e-4)
    assert result.final_loss < result.initial_loss - 0.1
    adapter = load_file(str(Path(result.adapter_dir) / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and max(float(v.abs().max()) for v in lora_b) > 0  # lora_B starts at zero
    saved = json.loads((tmp_path / "dpo" / "train_result.json").read_text())
    assert saved["losses"] == result.losses and saved["merged_dir"] == result.merged_dir

    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged.state_dict()[name], base.state_dict()[name])
    assert _margin(result.merged_dir, ds) > _margin(model_dir, ds)


@pytest.mark.model
def test_tiny_conservative_dpo_run(model_dir: str, tmp_path: Path) -> None:
    cfg = DPOTrainConfig(loss="conservative", max_steps=2, batch_size=2, learning_rate=5e-3, max_length=128,
                         lora_r=4, lora_alpha=8, lora_dropout=0.0, output_dir=str(tmp_path / "cdpo"))
    result = train_dpo(model_dir, _pairs(2), cfg)
    assert result.initial_loss == pytest.approx(math.log(2), abs=1e-4)  # the cDPO term is 0 while policy == reference
    assert result.final_loss < result.initial_loss
    assert Path(result.merged_dir, "config.json").exists()


@pytest.mark.model
def test_tiny_dpo_with_sft_term(model_dir: str, tmp_path: Path) -> None:
    cfg = DPOTrainConfig(sft_weight=1.0, max_steps=2, batch_size=2, learning_rate=5e-3, max_length=128,
                         lora_r=4, lora_alpha=8, lora_dropout=0.0, output_dir=str(tmp_path / "rpo"))
    result = train_dpo(model_dir, _pairs(2), cfg)
    assert result.initial_loss > math.log(2) + 0.1  # log 2 from DPO plus the chosen steps' NLL
    assert result.final_loss < result.initial_loss


def test_conservative_term_is_the_label_smoothed_loss() -> None:
    delta, eps, beta = torch.tensor([-3.0, 0.0, 0.5, 4.0]), torch.tensor([0.0, 0.1, 0.2, 0.4]), 0.1
    logsig = torch.nn.functional.logsigmoid
    cdpo = -(1 - eps) * logsig(beta * delta) - eps * logsig(-beta * delta)
    assert torch.allclose(-logsig(beta * delta) + conservative_extra(delta, eps, beta), cdpo, atol=1e-6)


def test_visit_label_smoothing() -> None:
    # gap 0.5, 4 visits each: se = 0.5 * sqrt(1/2), z = 1.414..., Phi(-z) = 0.0786...
    assert visit_label_smoothing(0.75, 0.25, 4, 4) == pytest.approx(0.0786, abs=1e-4)
    assert visit_label_smoothing(0.75, 0.25, 100, 100) < 1e-6
    assert visit_label_smoothing(0.5, 0.5, 4, 4) == 0.4  # no evidence: capped at 0.4 (0.5 would be no signal)
    assert visit_label_smoothing(1.0, 0.0, 0, 3) == 0.4


@pytest.mark.parametrize("kwargs, message", [
    ({"loss": "hinge"}, "DPOTrainConfig.loss must be one of ('sigmoid', 'ipo', 'conservative'), got 'hinge'"),
    ({"beta": 0}, "DPOTrainConfig.beta must be a finite number > 0, got 0"),
    ({"sft_weight": -1}, "DPOTrainConfig.sft_weight must be a finite number >= 0, got -1"),
    ({"label_smoothing": 0.1}, "DPOTrainConfig.label_smoothing is only used with loss='conservative', got loss='sigmoid'"),
    ({"loss": "conservative", "label_smoothing": 0.5}, "DPOTrainConfig.label_smoothing must be in [0, 0.5), got 0.5"),
    ({"loss": "conservative", "precompute_ref": False}, "DPOTrainConfig.loss='conservative' needs precompute_ref=True"),
    ({"learning_rate": -1e-5}, "DPOTrainConfig.learning_rate must be a finite number > 0, got -1e-05"),
    ({"batch_size": 0}, "DPOTrainConfig.batch_size must be a positive int, got 0"),
    ({"max_steps": 0}, "DPOTrainConfig.max_steps must be -1 (use epochs) or an int > 0, got 0"),
    ({"precision": "fp16"}, "DPOTrainConfig.precision must be one of ('auto', 'fp32', 'bf16'), got 'fp16'"),
    ({"lora_target_modules": []}, "DPOTrainConfig.lora_target_modules must be 'all-linear' or a non-empty list"),
])
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        DPOTrainConfig(**kwargs)


def test_bad_datasets_fail_before_loading_a_model(tmp_path: Path) -> None:
    bad = datasets.Dataset.from_list([{"prompt": "p", "answer": "a"}])
    with pytest.raises(TrainingDataError, match=re.escape("preference dataset lacks columns ['chosen', 'rejected']")):
        train_dpo("/nonexistent", bad, DPOTrainConfig(output_dir=str(tmp_path)))
    only_val = _pairs(1).map(lambda _: {"split": "validation"})
    with pytest.raises(TrainingDataError, match="the training split is empty"):
        train_dpo("/nonexistent", only_val, DPOTrainConfig(output_dir=str(tmp_path)))
    plain = datasets.Dataset.from_list([{"prompt": "p", "chosen": "a", "rejected": "b"}])
    with pytest.raises(TrainingDataError, match=r"lacks \['chosen_q', 'rejected_q', 'chosen_visits', 'rejected_visits'\]"):
        train_dpo("/nonexistent", plain, DPOTrainConfig(loss="conservative", output_dir=str(tmp_path)))
    with pytest.raises(ModelLoadError, match="model path /nonexistent does not exist"):
        train_dpo("/nonexistent", plain, DPOTrainConfig(output_dir=str(tmp_path)))

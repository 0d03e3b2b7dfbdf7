"""Stacking the LoRA adapters of a chain of iterations into one adapter on the base model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mcts_agent.errors import TrainingDataError
from mcts_agent.training.lora_stack import adapter_rank, stack_adapters

MODULES = ("q_proj", "down_proj")
SHAPES = {"q_proj": (6, 6), "down_proj": (5, 7)}  # (out, in)


def _adapter(path: Path, rank: int, alpha: int, seed: int, modules: tuple[str, ...] = MODULES) -> Path:
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for m in modules:
        out, inp = SHAPES[m]
        weights[f"base_model.model.layers.0.{m}.lora_A.weight"] = torch.randn(rank, inp, generator=g)
        weights[f"base_model.model.layers.0.{m}.lora_B.weight"] = torch.randn(out, rank, generator=g)
    path.mkdir(parents=True)
    save_file(weights, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": list(modules), "bias": "none",
        "use_dora": False, "use_rslora": False, "base_model_name_or_path": "previous/merged"}))
    return path


def _delta(adapter: Path, module: str) -> torch.Tensor:
    """The weight change an adapter makes to one module: (alpha / r) B A."""
    from safetensors.torch import load_file

    cfg = json.loads((adapter / "adapter_config.json").read_text())
    w = load_file(str(adapter / "adapter_model.safetensors"))
    key = f"base_model.model.layers.0.{module}.lora_"
    return (cfg["lora_alpha"] / cfg["r"]) * w[key + "B.weight"] @ w[key + "A.weight"]


def test_stacked_adapter_applies_the_chain_exactly(tmp_path: Path) -> None:
    chain = [_adapter(tmp_path / "a1", 4, 8, 1), _adapter(tmp_path / "a2", 2, 16, 2), _adapter(tmp_path / "a3", 4, 4, 3)]
    out = stack_adapters(chain, tmp_path / "stacked", base_model="base/model")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (adapter_rank(out), cfg["lora_alpha"], cfg["base_model_name_or_path"]) == (10, 10, "base/model")
    for m in MODULES:
        torch.testing.assert_close(_delta(out, m), sum(_delta(a, m) for a in chain), rtol=1e-5, atol=1e-5)
    # stacking onto a stacked adapter is the same as stacking the whole chain at once
    again = stack_adapters([stack_adapters(chain[:2], tmp_path / "s12", "base/model"), chain[2]], tmp_path / "s", "base/model")
    for m in MODULES:
        torch.testing.assert_close(_delta(again, m), _delta(out, m), rtol=1e-5, atol=1e-5)


def test_adapters_that_cannot_be_stacked_are_named(tmp_path: Path) -> None:
    a = _adapter(tmp_path / "a", 2, 4, 1)
    other = _adapter(tmp_path / "b", 2, 4, 2, modules=("q_proj",))
    with pytest.raises(TrainingDataError, match=r"b adapts other modules than .*a; stacking needs the same"):
        stack_adapters([a, other], tmp_path / "out", "base")
    dora = _adapter(tmp_path / "d", 2, 4, 3)
    cfg = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(TrainingDataError, match=r"only plain LoRA adapters .* \{'use_dora': True\}"):
        stack_adapters([a, dora], tmp_path / "out", "base")
    with pytest.raises(TrainingDataError, match="is not a LoRA adapter"):
        stack_adapters([tmp_path / "missing"], tmp_path / "out", "base")
    assert not (tmp_path / "out").exists()  # nothing half-written

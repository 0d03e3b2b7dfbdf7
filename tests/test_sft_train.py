"""SFT on rejection-sampling data with the real embedded model (tiny: 4 records, 3 steps)."""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import pytest

from mcts_agent.errors import TrainingDataError
from tests.train_golden import arithmetic_tree, embedded_model_dir
from mcts_agent.training.sft import SFTTrainConfig, train_sft
from mcts_agent.training.sft_data import rejection_sampling_sft


@pytest.mark.model
def test_tiny_sft_run_on_correct_paths(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model_dir = embedded_model_dir()
    trees = [arithmetic_tree(f"t{i}", a, b) for i, (a, b) in enumerate([(2, 3), (4, 5), (10, 7), (6, 6)])]
    ds = rejection_sampling_sft(trees)
    assert len(ds) == 4 and ds[0]["completion"] == "2 + 3 = 5. The answer is 5\n"
    cfg = SFTTrainConfig(max_steps=3, batch_size=4, learning_rate=5e-3, max_length=64, lora_r=4, lora_alpha=8,
                         lora_dropout=0.0, output_dir=str(tmp_path / "sft"))
    result = train_sft(model_dir, ds, cfg)
    assert result.steps == 3 and result.final_loss < result.initial_loss
    assert result.adapter_dir and Path(result.adapter_dir, "adapter_config.json").exists()
    AutoModelForCausalLM.from_pretrained(result.merged_dir)


def test_sft_dataset_needs_prompt_and_completion(tmp_path: Path) -> None:
    bad = datasets.Dataset.from_list([{"prompt": "p", "text": "t"}])
    with pytest.raises(TrainingDataError, match=re.escape("SFT dataset lacks columns ['completion']")):
        train_sft("/nonexistent", bad, SFTTrainConfig(output_dir=str(tmp_path)))

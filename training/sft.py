"""Supervised fine-tuning on prompt/completion records with TRL's SFTTrainer (LoRA by default).

Use it for rejection-sampling (STaR) data and revision trajectories from
:mod:`mcts_agent.training.sft_data`. The loss is on completion tokens only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mcts_agent.errors import TrainingDataError
from mcts_agent.training.finetune import (FinetuneConfig, TrainResult, finish, load_policy, log_callback, lora_config,
                                         resolve_model_path, split_train_eval, trainer_args, use_bf16)

if TYPE_CHECKING:
    import datasets

SFT_COLUMNS = ("prompt", "completion")


@dataclass
class SFTTrainConfig(FinetuneConfig):
    """SFT options (everything in FinetuneConfig)."""

    output_dir: str = field(default="runs/sft", metadata={"help": "Where adapter/, merged/ and train_result.json go."})


def train_sft(model_path: str | None, dataset: "datasets.Dataset | datasets.DatasetDict",
              config: SFTTrainConfig | None = None) -> TrainResult:
    """Train the policy at ``model_path`` on prompt/completion records; save adapter + merged model."""
    cfg = config or SFTTrainConfig()
    started = time.perf_counter()
    train, val = split_train_eval(dataset)
    missing = [c for c in SFT_COLUMNS if c not in train.column_names]
    if missing:
        raise TrainingDataError(f"SFT dataset lacks columns {missing}: expected {list(SFT_COLUMNS)}, got {train.column_names}")
    keep = list(SFT_COLUMNS)
    train = train.select_columns(keep)
    val = val.select_columns(keep) if val is not None else None

    from trl import SFTConfig, SFTTrainer

    bf16 = use_bf16(cfg.precision)
    t0 = time.perf_counter()
    model, tok = load_policy(resolve_model_path(model_path), bf16)
    t1 = time.perf_counter()
    args = SFTConfig(**trainer_args(cfg, bf16, val is not None), completion_only_loss=True, packing=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=val, processing_class=tok,
                         peft_config=lora_config(cfg), callbacks=[log_callback(cfg)])
    t2 = time.perf_counter()
    trainer.train()
    phases = {"load": t1 - t0, "prepare": t2 - t1, "train": time.perf_counter() - t2}
    return finish(trainer, cfg, tok, peft=not cfg.full_finetune, examples=len(train), started=started, phases=phases)

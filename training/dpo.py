"""Step-level DPO with TRL's DPOTrainer (LoRA by default, reference = the adapter disabled).

Losses: ``sigmoid`` (DPO), ``ipo`` (beta is IPO's tau) and ``conservative`` (cDPO: the
preference label is flipped with probability eps, so the loss is
``-(1 - eps) log s(b*d) - eps log s(-b*d)``). For cDPO eps is a set value or, by default,
derived per pair from the Q gap and visit counts (:func:`visit_label_smoothing`).

Reference log-probabilities are computed once before training (``precompute_ref_log_probs``).
Step pairs are continuations of a partial solution, so by default no EOS is appended to
chosen/rejected (TRL appends one); set ``append_eos=True`` to keep TRL's behaviour.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcts_agent.errors import ConfigError, TrainingDataError
from mcts_agent.training.finetune import (FinetuneConfig, TrainResult, finish, load_policy, log_callback, lora_config,
                                         resolve_model_path, split_train_eval, trainer_args, use_bf16)

if TYPE_CHECKING:
    import datasets
    import torch

DPO_LOSSES = ("sigmoid", "ipo", "conservative")
_TRL_LOSS = {"sigmoid": "sigmoid", "ipo": "ipo", "conservative": "sigmoid"}
PAIR_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class DPOTrainConfig(FinetuneConfig):
    """Step-level DPO options (plus everything in FinetuneConfig)."""

    loss: str = field(default="sigmoid", metadata={"help": "'sigmoid' (DPO), 'ipo', or 'conservative' (cDPO label smoothing)."})
    beta: float = field(default=0.1, metadata={"help": "KL strength (IPO: the regularizer tau)."})
    label_smoothing: float | None = field(
        default=None, metadata={"help": "cDPO flip probability in [0, 0.5); None derives it per pair from Q gap and visits."})
    smoothing_cap: float = field(default=0.4, metadata={"help": "Upper bound of the derived per-pair label smoothing, < 0.5."})
    sft_weight: float = field(
        default=0.0, metadata={"help": "Weight of an added NLL loss on the chosen step (RPO-style; 0 = plain DPO). "
                                       "Keeps the chosen step's likelihood from falling with the rejected one's."})
    precompute_ref: bool = field(default=True, metadata={"help": "Compute reference log-probs once, before training."})
    append_eos: bool = field(default=False, metadata={"help": "Append EOS to chosen/rejected (TRL's default; off for step pairs)."})
    output_dir: str = field(default="runs/dpo", metadata={"help": "Where adapter/, merged/ and train_result.json go."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in DPO_LOSSES:
            raise ConfigError(f"DPOTrainConfig.loss must be one of {DPO_LOSSES}, got {self.loss!r}")
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta > 0):
            raise ConfigError(f"DPOTrainConfig.beta must be a finite number > 0, got {self.beta!r}")
        if self.label_smoothing is not None:
            if self.loss != "conservative":
                raise ConfigError(f"DPOTrainConfig.label_smoothing is only used with loss='conservative', got loss={self.loss!r}")
            if not 0.0 <= self.label_smoothing < 0.5:
                raise ConfigError(f"DPOTrainConfig.label_smoothing must be in [0, 0.5), got {self.label_smoothing!r}")
        if not (isinstance(self.sft_weight, (int, float)) and math.isfinite(self.sft_weight) and self.sft_weight >= 0):
            raise ConfigError(f"DPOTrainConfig.sft_weight must be a finite number >= 0, got {self.sft_weight!r}")
        if not 0.0 <= self.smoothing_cap < 0.5:
            raise ConfigError(f"DPOTrainConfig.smoothing_cap must be in [0, 0.5), got {self.smoothing_cap!r}")
        if self.loss == "conservative" and not self.precompute_ref:
            raise ConfigError("DPOTrainConfig.loss='conservative' needs precompute_ref=True")


def visit_label_smoothing(chosen_q: float, rejected_q: float, chosen_visits: int, rejected_visits: int,
                          cap: float = 0.4) -> float:
    """Probability that the pair's order is wrong, for cDPO.

    Values lie in [0, 1], so each Q is a mean with variance <= 1/4 per visit: the gap's
    standard error is at most ``0.5 * sqrt(1/n_c + 1/n_r)``. Under a normal approximation the
    order is flipped with probability ``Phi(-gap / se)``; clipped to [0, cap].
    """
    if chosen_visits < 1 or rejected_visits < 1:
        return cap
    se = 0.5 * math.sqrt(1.0 / chosen_visits + 1.0 / rejected_visits)
    flip = 0.5 * math.erfc((chosen_q - rejected_q) / se / math.sqrt(2.0))
    return min(cap, max(0.0, flip))


def conservative_extra(delta: "torch.Tensor", eps: "torch.Tensor", beta: float) -> "torch.Tensor":
    """cDPO minus the sigmoid loss, per pair: since -log s(-x) = -log s(x) + x, it is ``eps * beta * delta``."""
    return eps * beta * delta


def _make_trainer_class() -> type:
    """DPOTrainer extended with step-pair EOS handling and per-pair cDPO smoothing (built lazily: TRL imports slowly)."""
    import torch
    from trl import DPOTrainer

    class StepDPOTrainer(DPOTrainer):
        def __init__(self, *args: Any, append_eos: bool = False, smoothing: bool = False, **kwargs: Any) -> None:
            self._append_eos = append_eos
            self._smoothing = smoothing
            super().__init__(*args, **kwargs)
            if smoothing:
                base = self.data_collator

                def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
                    batch = base(examples)
                    batch["label_smoothing"] = torch.tensor([float(e["label_smoothing"]) for e in examples])
                    return batch

                self.data_collator = collate

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # type: ignore[override]
            fresh = "chosen_ids" not in dataset.column_names
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if self._append_eos or not fresh:
                return dataset
            eos = self._tokenizer.eos_token_id

            def strip(example: dict[str, Any]) -> dict[str, Any]:
                out = {}
                for key in ("chosen_ids", "rejected_ids"):
                    ids = example[key]
                    out[key] = ids[:-1] if len(ids) > 1 and ids[-1] == eos else ids
                return out

            return dataset.map(strip, desc=f"Removing the appended EOS from {dataset_name} pairs")

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if self._smoothing and "label_smoothing" not in self._signature_columns:
                self._signature_columns.append("label_smoothing")

        def _compute_loss(self, model, inputs, return_outputs):  # type: ignore[override]
            eps = inputs.pop("label_smoothing", None)
            if eps is None:
                return super()._compute_loss(model, inputs, return_outputs)
            captured: list[Any] = []
            hook = model.register_forward_hook(lambda _m, _a, out: captured.append(out))
            try:
                result = super()._compute_loss(model, inputs, return_outputs)
            finally:
                hook.remove()
            seq = inputs["completion_mask"].size(1) - 1
            chosen, rejected = captured[0].log_probs[:, -seq:].sum(dim=1).chunk(2, dim=0)
            delta = (chosen - inputs["ref_chosen_logps"]) - (rejected - inputs["ref_rejected_logps"])
            extra = conservative_extra(delta, eps.to(delta.device, delta.dtype), self.beta).mean()
            return (result[0] + extra, result[1]) if return_outputs else result + extra

    return StepDPOTrainer


def _add_smoothing(ds: "datasets.Dataset", cfg: DPOTrainConfig) -> "datasets.Dataset":
    if cfg.label_smoothing is not None:
        return ds.map(lambda _: {"label_smoothing": float(cfg.label_smoothing)})
    needed = ("chosen_q", "rejected_q", "chosen_visits", "rejected_visits")
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise TrainingDataError(f"loss='conservative' with label_smoothing=None derives it from columns {list(needed)}; "
                                f"the dataset lacks {missing} (set label_smoothing to a number instead)")
    return ds.map(lambda e: {"label_smoothing": visit_label_smoothing(
        e["chosen_q"], e["rejected_q"], e["chosen_visits"], e["rejected_visits"], cfg.smoothing_cap)})


def train_dpo(model_path: str | None, dataset: "datasets.Dataset | datasets.DatasetDict",
              config: DPOTrainConfig | None = None) -> TrainResult:
    """Train the policy at ``model_path`` on preference pairs; save adapter + merged model.

    ``dataset``: columns prompt/chosen/rejected (e.g. :func:`mcts_agent.training.pairs.pairs_to_dataset`);
    rows whose ``split`` column is 'validation' (or a DatasetDict's 'validation') are evaluated
    on, not trained on. ``model_path=None`` trains the embedded default model.
    """
    cfg = config or DPOTrainConfig()
    started = time.perf_counter()
    train, val = split_train_eval(dataset)
    missing = [c for c in PAIR_COLUMNS if c not in train.column_names]
    if missing:
        raise TrainingDataError(f"preference dataset lacks columns {missing}: expected {list(PAIR_COLUMNS)}, got {train.column_names}")
    smoothing = cfg.loss == "conservative"
    if smoothing:
        train = _add_smoothing(train, cfg)
        val = _add_smoothing(val, cfg) if val is not None else None

    from trl import DPOConfig

    bf16 = use_bf16(cfg.precision)
    t0 = time.perf_counter()
    model, tok = load_policy(resolve_model_path(model_path), bf16)
    t1 = time.perf_counter()
    losses = {"loss_type": [_TRL_LOSS[cfg.loss]]}
    if cfg.sft_weight > 0:  # TRL's multi-loss: DPO + weighted NLL of the chosen completion
        losses = {"loss_type": [_TRL_LOSS[cfg.loss], "sft"], "loss_weights": [1.0, float(cfg.sft_weight)]}
    args = DPOConfig(**trainer_args(cfg, bf16, val is not None), beta=cfg.beta, **losses,
                     precompute_ref_log_probs=cfg.precompute_ref)
    trainer_cls = _make_trainer_class()
    trainer = trainer_cls(model=model, ref_model=None, args=args, train_dataset=train, eval_dataset=val,
                          processing_class=tok, peft_config=lora_config(cfg), append_eos=cfg.append_eos,
                          smoothing=smoothing, callbacks=[log_callback(cfg)])
    if len(trainer.train_dataset) == 0:
        raise TrainingDataError(f"all {len(train)} training pairs have prompts of max_length={cfg.max_length} tokens "
                                "or more, so nothing is left to train on: raise max_length")
    t2 = time.perf_counter()
    trainer.train()
    phases = {"load": t1 - t0, "prepare": t2 - t1, "train": time.perf_counter() - t2}  # prepare: tokenize + reference log-probs
    return finish(trainer, cfg, tok, peft=not cfg.full_finetune, examples=len(train), started=started, phases=phases)

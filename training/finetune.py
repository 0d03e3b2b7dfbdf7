"""What SFT and DPO training share: the config base, model loading, LoRA, saving, results.

Every run writes, under ``output_dir``:
  ``adapter/``  the LoRA adapter (absent for full fine-tuning),
  ``merged/``   the full policy (adapter merged in) plus its tokenizer, loadable by path by
                transformers, vLLM or an OpenAI-compatible server,
  ``train_result.json``  written last: its presence marks a finished run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcts_agent.errors import ConfigError, ModelLoadError, TrainingDataError

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class FinetuneConfig:
    """Options every fine-tuning run takes (LoRA by default)."""

    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (linear decay)."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the data; ignored when max_steps > 0."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; > 0 overrides epochs."})
    batch_size: int = field(default=4, metadata={"help": "Examples (pairs for DPO) per device per step."})
    grad_accum: int = field(default=1, metadata={"help": "Gradient accumulation steps."})
    max_length: int = field(default=512, metadata={"help": "Max tokens of prompt + completion (longer ones are cut at the end)."})
    full_finetune: bool = field(default=False, metadata={"help": "Train every weight instead of a LoRA adapter."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA inputs."})
    lora_target_modules: str | list[str] = field(
        default="all-linear", metadata={"help": "Modules to adapt: a list of names or 'all-linear'."})
    precision: str = field(default="auto", metadata={"help": "'auto' (bf16 on a bf16-capable GPU, fp32 on CPU), 'fp32' or 'bf16'."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory on long sequences."})
    seed: int = field(default=0, metadata={"help": "Seed of data order, dropout and LoRA init."})
    output_dir: str = field(default="runs/train", metadata={"help": "Where adapter/, merged/ and train_result.json go."})
    logging_steps: int = field(default=1, metadata={"help": "Log the loss every this many steps."})

    def __post_init__(self) -> None:
        _positive(self, "learning_rate", float)
        _positive(self, "epochs", float)
        for name in ("batch_size", "grad_accum", "max_length", "lora_r", "lora_alpha", "logging_steps"):
            _positive(self, name, int)
        if not isinstance(self.max_steps, int) or self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"{type(self).__name__}.max_steps must be -1 (use epochs) or an int > 0, got {self.max_steps!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"{type(self).__name__}.lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{type(self).__name__}.precision must be one of {PRECISIONS}, got {self.precision!r}")
        t = self.lora_target_modules
        if not (isinstance(t, str) and t) and not (isinstance(t, (list, tuple)) and t and all(isinstance(m, str) for m in t)):
            raise ConfigError(f"{type(self).__name__}.lora_target_modules must be 'all-linear' or a non-empty list of module names, got {t!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positive(cfg: Any, name: str, kind: type) -> None:
    v = getattr(cfg, name)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    if not ok or (kind is int and not isinstance(v, int)):
        raise ConfigError(f"{type(cfg).__name__}.{name} must be a {'positive int' if kind is int else 'finite number > 0'}, got {v!r}")


@dataclass
class TrainResult:
    """What a training run produced and how it went."""

    output_dir: str
    merged_dir: str
    adapter_dir: str | None
    initial_loss: float
    final_loss: float
    losses: list[float]
    steps: int
    seconds: float
    examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_model_path(model_path: str | os.PathLike[str] | None) -> str:
    """What ``from_pretrained`` loads, via ``model_store.resolve_model``: a model directory, a
    ``.gguf`` file (dequantized once into the cache), an HF id, or None for the embedded model."""
    from mcts_agent.llm.model_store import resolve_model

    return resolve_model(None if model_path is None else os.fspath(model_path))


def use_bf16(precision: str) -> bool:
    """bf16 only where it pays: a CUDA GPU with bf16 support (never on CPU)."""
    import torch

    if precision == "fp32":
        return False
    gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if precision == "bf16" and not gpu_bf16:
        raise ConfigError("precision='bf16' needs a CUDA GPU with bf16 support; use 'auto' or 'fp32' on CPU")
    return gpu_bf16


def load_policy(model_path: str, bf16: bool) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """Model (fp32, or bf16 on GPU) and tokenizer with a pad token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if bf16 else torch.float32)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load a causal LM from {model_path!r}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def lora_config(cfg: FinetuneConfig) -> Any:
    """The peft LoraConfig for ``cfg`` (None for full fine-tuning)."""
    if cfg.full_finetune:
        return None
    from peft import LoraConfig

    target = cfg.lora_target_modules if isinstance(cfg.lora_target_modules, str) else list(cfg.lora_target_modules)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=target, bias="none", task_type="CAUSAL_LM")


def trainer_args(cfg: FinetuneConfig, bf16: bool, has_eval: bool) -> dict[str, Any]:
    """Keyword arguments shared by TRL's DPOConfig and SFTConfig."""
    return dict(
        output_dir=str(Path(cfg.output_dir) / "trainer"), learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        max_length=cfg.max_length, bf16=bf16, fp16=False, gradient_checkpointing=cfg.gradient_checkpointing,
        seed=cfg.seed, data_seed=cfg.seed, logging_steps=cfg.logging_steps, save_strategy="no", report_to="none",
        eval_strategy="epoch" if has_eval else "no", dataloader_num_workers=0, dataloader_pin_memory=False,
        disable_tqdm=True,
    )


def log_callback(cfg: FinetuneConfig) -> Any:
    """A TrainerCallback that appends every logged step (loss, learning rate, ...) to
    ``output_dir/train_log.jsonl`` as it happens, so a long run can be followed and a killed
    one shows how far it got."""
    from transformers import TrainerCallback

    path = Path(cfg.output_dir) / "train_log.jsonl"

    class JsonlLog(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            row = {"step": state.global_step, **{k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}}
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    return JsonlLog()


def split_train_eval(dataset: "datasets.Dataset | datasets.DatasetDict") -> tuple["datasets.Dataset", "datasets.Dataset | None"]:
    """(train, eval): a DatasetDict's 'train'/'validation', or a Dataset split by its ``split`` column."""
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            raise TrainingDataError(f"DatasetDict has splits {list(dataset)}, expected a 'train' split")
        train, val = dataset["train"], dataset.get("validation")
    elif isinstance(dataset, datasets.Dataset):
        if "split" in dataset.column_names:
            train = dataset.filter(lambda s: s == "train", input_columns="split")
            val = dataset.filter(lambda s: s == "validation", input_columns="split")
        else:
            train, val = dataset, None
    else:
        raise TrainingDataError(f"dataset must be a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")
    if len(train) == 0:
        raise TrainingDataError("the training split is empty: expected at least one example")
    return train, (val if val is not None and len(val) else None)


def save_outputs(model: Any, tokenizer: "PreTrainedTokenizerBase", out: Path, peft: bool) -> tuple[str | None, str]:
    """Save the adapter (if any) and the merged full model; each directory appears atomically."""
    adapter_dir = None
    if peft:
        adapter_dir = str(_atomic_dir(out / "adapter", lambda d: (model.save_pretrained(d), tokenizer.save_pretrained(d))))
        model = model.merge_and_unload()
    merged = _atomic_dir(out / "merged", lambda d: (model.save_pretrained(d), tokenizer.save_pretrained(d)))
    return adapter_dir, str(merged)


def _atomic_dir(target: Path, write: Any) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def finish(trainer: Any, cfg: FinetuneConfig, tokenizer: Any, peft: bool, examples: int, started: float,
           phases: dict[str, float]) -> TrainResult:
    """Collect losses from the trainer's log, save the outputs, write ``train_result.json``.

    ``phases``: seconds spent so far per phase (load, prepare, train); save is added here.
    """
    from mcts_agent.io import atomic_write_json

    log = trainer.state.log_history
    losses = [float(e["loss"]) for e in log if "loss" in e]
    if not losses:
        raise TrainingDataError("training logged no loss: no optimizer step ran (is the dataset empty after truncation?)")
    metrics = {k: float(v) for e in log for k, v in e.items() if isinstance(v, (int, float)) and k.startswith("eval_")}
    train_out = [e for e in log if "train_runtime" in e]
    if train_out:
        metrics["train_runtime"] = float(train_out[-1]["train_runtime"])
    out = Path(cfg.output_dir)
    t = time.perf_counter()
    adapter_dir, merged_dir = save_outputs(trainer.model, tokenizer, out, peft)
    metrics.update({f"{k}_seconds": v for k, v in phases.items()}, save_seconds=time.perf_counter() - t)
    result = TrainResult(output_dir=str(out), merged_dir=merged_dir, adapter_dir=adapter_dir, initial_loss=losses[0],
                         final_loss=losses[-1], losses=losses, steps=int(trainer.state.global_step),
                         seconds=time.perf_counter() - started, examples=examples, metrics=metrics, config=cfg.to_dict())
    atomic_write_json(out / "train_result.json", json.loads(json.dumps(result.to_dict(), default=str)))
    return result

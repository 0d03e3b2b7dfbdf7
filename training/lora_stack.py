"""One LoRA adapter on the base model for a chain of iterations.

Iteration k trains a LoRA adapter on iteration k-1's merged policy, so on every target module
policy k is ``W_base + sum_i s_i B_i A_i`` (``s_i = alpha_i / r_i``). Concatenating the factors
along the rank, ``A = [A_1; ...; A_k]`` and ``B = [s_1 B_1, ..., s_k B_k]``, gives one adapter of
rank ``sum r_i`` and scaling 1 whose product is exactly that sum. A server that holds the base
model (``vllm serve --enable-lora``) can then serve each iteration's policy by loading one
adapter, without a restart or a copy of the full weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from mcts_agent.errors import TrainingDataError

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def _read(adapter: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file

    if not (adapter / CONFIG).is_file() or not (adapter / WEIGHTS).is_file():
        raise TrainingDataError(f"{adapter} is not a LoRA adapter: expected {CONFIG} and {WEIGHTS} in it")
    cfg = json.loads((adapter / CONFIG).read_text())
    unsupported = {k: cfg.get(k) for k in ("use_dora", "use_rslora", "modules_to_save", "rank_pattern", "alpha_pattern")
                   if cfg.get(k)}
    if cfg.get("peft_type") != "LORA" or cfg.get("bias", "none") != "none" or unsupported:
        raise TrainingDataError(f"{adapter}: only plain LoRA adapters (no DoRA, rsLoRA, bias, modules_to_save or "
                                f"per-module ranks) can be stacked; found peft_type={cfg.get('peft_type')!r}, "
                                f"bias={cfg.get('bias')!r}, {unsupported}")
    return cfg, load_file(str(adapter / WEIGHTS))


def stack_adapters(adapters: Sequence[str | Path], out: str | Path, base_model: str) -> Path:
    """Write at ``out`` the single adapter on ``base_model`` equal to applying ``adapters`` in turn.

    Every adapter must target the same modules (each trained on the previous one's merged model).
    """
    from mcts_agent.training.finetune import _atomic_dir

    if not adapters:
        raise TrainingDataError("stack_adapters needs at least one adapter")
    read = [_read(Path(a)) for a in adapters]
    keys = set(read[0][1])
    for a, (_, weights) in zip(adapters[1:], read[1:]):
        if set(weights) != keys:
            raise TrainingDataError(f"{a} adapts other modules than {adapters[0]}; stacking needs the same "
                                    f"lora_target_modules in every iteration")
    import torch
    from safetensors.torch import save_file

    stacked: dict[str, Any] = {}
    for key in sorted(keys):
        if key.endswith("lora_A.weight"):
            stacked[key] = torch.cat([w[key] for _, w in read], dim=0).contiguous()
        elif key.endswith("lora_B.weight"):
            stacked[key] = torch.cat([w[key] * (c["lora_alpha"] / c["r"]) for c, w in read], dim=1).contiguous()
        else:
            raise TrainingDataError(f"{adapters[0]}: unexpected tensor {key!r} in a LoRA adapter")
    rank = sum(int(c["r"]) for c, _ in read)
    config = {**read[0][0], "r": rank, "lora_alpha": rank, "lora_dropout": 0.0, "base_model_name_or_path": base_model,
              "target_modules": sorted(set().union(*(c["target_modules"] for c, _ in read)))}

    def write(d: str) -> None:
        save_file(stacked, str(Path(d) / WEIGHTS), metadata={"format": "pt"})
        (Path(d) / CONFIG).write_text(json.dumps(config, indent=2))

    return _atomic_dir(Path(out), write)


def adapter_rank(adapter: str | Path) -> int:
    """The rank an adapter directory declares (what a server's --max-lora-rank must cover)."""
    return int(json.loads((Path(adapter) / CONFIG).read_text())["r"])

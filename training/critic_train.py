"""Train a process reward model or a value model from outcome-mode search trees.

Both are the language model with a scalar head (``critics.learned.ScalarHeadModel``; LoRA on
the backbone by default, the head trained in full) fit with binary cross-entropy to soft
targets in [0, 1]:

* ``kind="prm"``: one example per terminal path (``sft_data.prm_path_targets``), a target at
  every step's separator token, all of a path's steps in one forward pass; default label
  ``mc`` (the share of rollouts below the step that reached a correct answer, Math-Shepherd /
  OmegaPRM).
* ``kind="value"``: one example per labelled step (``sft_data.prm_step_labels``), the target
  at its last token; default label ``q`` (the step's backed-up Q, rStar-Math).

Why a small loop over transformers + peft rather than TRL: TRL 1.16 no longer ships
``PRMTrainer``, and its ``RewardTrainer`` fits pairwise (chosen/rejected) preferences on a
sequence-classification head, while these targets are per-token regressions. The loop is
forty lines: AdamW (head at its own learning rate), linear decay, gradient accumulation and
clipping, a seeded order, and a log line per step in ``train_log.jsonl``.

``output_dir/critic/`` is the critic directory (``make_critic("prm", path=...)``), written
atomically; ``output_dir/train_result.json`` is written last. Passing a critic directory as
the model continues training it (head included): the self-evolving critic of ``iterate``.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from mcts_agent.critic import Critic, NodeView
from mcts_agent.critics.learned import CONFIG_FILE, KINDS, PathFormat, ScalarHeadModel, encode_path
from mcts_agent.errors import ConfigError, ModelLoadError, TrainingDataError
from mcts_agent.tree import Tree
from mcts_agent.training.common import CorrectFn, reward_correct, subtree_outcomes
from mcts_agent.training.finetune import FinetuneConfig, _atomic_dir, _positive, resolve_model_path, use_bf16
from mcts_agent.training.monitors import exploitation, roc_auc
from mcts_agent.training.sft_data import LABEL_MODES, StepLabelConfig, label_stats, prm_path_targets, prm_step_labels

DEFAULT_LABEL = {"prm": "mc", "value": "q"}


@dataclass
class CriticTrainConfig(FinetuneConfig):
    """A trained critic: what it learns, from which labels, and how (LoRA by default)."""

    kind: str = field(default="prm", metadata={"help": "'prm': per-step targets along each path; 'value': one target per state."})
    label: str | None = field(default=None, metadata={"help": f"Step label {LABEL_MODES}; None: 'mc' for prm, 'q' for value."})
    min_visits: int = field(default=1, metadata={"help": "Steps visited fewer times get no target."})
    head_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the scalar head (new, so larger)."})
    val_fraction: float = field(default=0.2, metadata={"help": "Share of the tasks held out to measure the trained critic's AUC (0: none)."})
    template: str = field(default=PathFormat.template, metadata={"help": "Text before the steps; {question} is filled in."})
    separator: str = field(default=PathFormat.separator, metadata={"help": "Appended to each step; its last token carries the score."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of the backbone (LoRA or full)."})
    epochs: float = field(default=2.0, metadata={"help": "Passes over the data; ignored when max_steps > 0."})
    batch_size: int = field(default=8, metadata={"help": "Examples (paths or states) per step."})
    max_length: int = field(default=256, metadata={"help": "Longer inputs keep their last max_length tokens."})
    output_dir: str = field(default="runs/critic", metadata={"help": "Where critic/, train_log.jsonl and train_result.json go."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in KINDS:
            raise ConfigError(f"CriticTrainConfig.kind must be one of {KINDS}, got {self.kind!r}")
        if self.label is None:
            self.label = DEFAULT_LABEL[self.kind]
        _positive(self, "head_learning_rate", float)
        if not isinstance(self.val_fraction, (int, float)) or not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"CriticTrainConfig.val_fraction must be in [0, 1), got {self.val_fraction!r}")
        self.labels()  # validates label and min_visits
        self.path_format()

    def labels(self) -> StepLabelConfig:
        return StepLabelConfig(label=self.label, min_visits=self.min_visits)  # type: ignore[arg-type]

    def path_format(self) -> PathFormat:
        return PathFormat(template=self.template, separator=self.separator, max_length=self.max_length)


@dataclass
class CriticTrainResult:
    """What a critic training run produced."""

    critic_dir: str
    kind: str
    loss_before: float  # mean loss over the training examples before the first step
    loss_after: float  # the same after the last step
    losses: list[float]
    steps: int
    examples: int
    seconds: float
    label_stats: dict[str, Any]
    val: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----- data ---------------------------------------------------------------------------------------
Example = tuple[list[int], list[int], list[float]]  # token ids, scored positions, targets


def critic_examples(trees: Sequence[Tree], cfg: CriticTrainConfig, tokenizer: Any,
                    correct_fn: CorrectFn = reward_correct) -> tuple[list[Example], dict[str, Any]]:
    """Encoded examples and label statistics (balance, per-depth counts)."""
    fmt, examples, labels, depths = cfg.path_format(), [], [], []
    if cfg.kind == "prm":
        for row in prm_path_targets(trees, cfg.labels(), correct_fn):
            ids, ends = encode_path(tokenizer, fmt, row["question"], row["steps"])
            kept = [(e, t) for e, t in zip(ends, row["targets"]) if e >= 0 and t is not None]
            if kept:
                examples.append((ids, [e for e, _ in kept], [float(t) for _, t in kept]))
            labels += row["targets"]
            depths += row["depths"]
    else:
        for row in prm_step_labels(trees, cfg.labels(), correct_fn=correct_fn):
            ids, ends = encode_path(tokenizer, fmt, row["question"], row["steps"])
            examples.append((ids, [ends[-1]], [float(row["label"])]))
            labels.append(row["label"])
            depths.append(row["depth"])
    if not examples:
        raise TrainingDataError(f"no {cfg.kind} example fits max_length={cfg.max_length} in {len(trees)} tree(s)")
    return examples, {"examples": len(examples), "targets": sum(len(e[2]) for e in examples), **label_stats(labels, depths)}


def split_trees(trees: Sequence[Tree], fraction: float, seed: int) -> tuple[list[Tree], list[Tree]]:
    """(train, held-out) by task: a seeded ``fraction`` of the task ids is held out (none if < 2 tasks)."""
    tasks = sorted({t.task_id for t in trees})
    if fraction <= 0 or len(tasks) < 2:
        return list(trees), []
    random.Random(seed).shuffle(tasks)
    held = set(tasks[:min(len(tasks) - 1, max(1, round(fraction * len(tasks))))])
    return [t for t in trees if t.task_id not in held], [t for t in trees if t.task_id in held]


# ----- scoring trees (AUC) ------------------------------------------------------------------------
def tree_views(tree: Tree) -> list[NodeView]:
    """A NodeView per non-root node, as search shows it to a critic (no reward, no gold)."""
    return [NodeView(prompt=tree.prompt(n.id) or "", question=tree.question, steps=tuple(tree.steps(n.id)),
                     answer=n.answer, terminal=n.terminal) for n in tree.nodes[1:]]


def critic_auc(critic: Critic, trees: Sequence[Tree], correct_fn: CorrectFn = reward_correct,
               chunk: int = 256) -> dict[str, Any]:
    """Step AUC (does a step's subtree reach a correct answer?) and answer AUC (is a terminal
    right?) of ``critic``'s scores over every non-root node; ``scores`` keeps them per tree."""
    views = [(t, n, v) for t in trees for n, v in zip(t.nodes[1:], tree_views(t))]
    scores: list[float] = []
    for i in range(0, len(views), chunk):
        scores += critic([v for _, _, v in views[i:i + chunk]])
    steps: tuple[list[float], list[bool]] = ([], [])
    answers: tuple[list[float], list[bool]] = ([], [])
    outcomes = {id(t): subtree_outcomes(t, correct_fn) for t in trees}
    for (t, n, _), s in zip(views, scores):
        good, known = outcomes[id(t)][n.id]
        if known:
            steps[0].append(s)
            steps[1].append(good)
        verdict = correct_fn(t, n) if n.terminal else None
        if verdict is not None:
            answers[0].append(s)
            answers[1].append(verdict)
    per_tree: dict[str, list[float]] = {}
    for (t, _, _), s in zip(views, scores):
        per_tree.setdefault(t.tree_id, []).append(s)
    return {"step_auc": roc_auc(*steps), "answer_auc": roc_auc(*answers), "steps": len(steps[0]),
            "answers": len(answers[0]), "scores": per_tree}


# ----- training -----------------------------------------------------------------------------------
def load_for_training(model_path: str | None, cfg: CriticTrainConfig, device: str) -> tuple[ScalarHeadModel, Any, str]:
    """(model, tokenizer, base path): a fresh head on ``model_path`` (None: the embedded model),
    or a critic directory's backbone and head to train further."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    critic_dir = Path(model_path).expanduser() if model_path else None
    resume = critic_dir is not None and (critic_dir / CONFIG_FILE).is_file()
    base = str(critic_dir / "model") if resume else resolve_model_path(model_path)
    dtype = torch.bfloat16 if use_bf16(cfg.precision) else torch.float32
    try:
        tok = AutoTokenizer.from_pretrained(base)
        backbone = AutoModel.from_pretrained(base, dtype=dtype).to(device)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load a model backbone from {base!r}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(cfg.seed)
    head = torch.nn.Linear(backbone.config.hidden_size, 1).to(device)
    if resume:
        head.load_state_dict(load_file(str(critic_dir / "head.safetensors")))  # type: ignore[operator]
    else:
        torch.nn.init.normal_(head.weight, std=0.02 / math.sqrt(backbone.config.hidden_size))
        torch.nn.init.zeros_(head.bias)
    if cfg.gradient_checkpointing:
        backbone.gradient_checkpointing_enable()
        backbone.enable_input_require_grads()
    if not cfg.full_finetune:
        from peft import LoraConfig, get_peft_model

        target = cfg.lora_target_modules if isinstance(cfg.lora_target_modules, str) else list(cfg.lora_target_modules)
        backbone = get_peft_model(backbone, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, bias="none",
                                                       lora_dropout=cfg.lora_dropout, target_modules=target))
    return ScalarHeadModel(backbone, head), tok, base


def _batch_loss(model: ScalarHeadModel, batch: list[Example], pad: int, device: str) -> Any:
    import torch

    width = max(len(ids) for ids, _, _ in batch)
    x = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    rows, cols, targets = [], [], []
    for r, (ids, pos, ys) in enumerate(batch):
        x[r, :len(ids)] = torch.tensor(ids)
        mask[r, :len(ids)] = 1
        rows += [r] * len(pos)
        cols += pos
        targets += ys
    logits = model(x.to(device), attention_mask=mask.to(device)).logits[..., 0].float()
    picked = logits[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
    return torch.nn.functional.binary_cross_entropy_with_logits(picked, torch.tensor(targets, device=device))


def _mean_loss(model: ScalarHeadModel, examples: list[Example], pad: int, device: str, batch_size: int) -> float:
    import torch

    model.backbone.eval()
    sample = examples[:512]
    with torch.no_grad():
        total = sum(float(_batch_loss(model, sample[i:i + batch_size], pad, device)) * len(sample[i:i + batch_size])
                    for i in range(0, len(sample), batch_size))
    return total / len(sample)


def train_critic(model_path: str | None, trees: Sequence[Tree], config: CriticTrainConfig | None = None,
                 correct_fn: CorrectFn = reward_correct,
                 progress: Callable[[int, int], None] | None = None) -> CriticTrainResult:
    """Fit a critic to ``trees`` (outcome-mode search trees); save it to ``output_dir/critic``.

    ``model_path``: an HF id or directory (None: the embedded model), or a critic directory to
    train further; ``progress(step, steps)`` is called after each optimizer step."""
    import torch
    from safetensors.torch import save_file
    from transformers import get_linear_schedule_with_warmup

    from mcts_agent.io import atomic_write_json

    cfg = config or CriticTrainConfig()
    started = time.perf_counter()
    train_trees, val_trees = split_trees(list(trees), cfg.val_fraction, cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok, base = load_for_training(model_path, cfg, device)
    examples, stats = critic_examples(train_trees, cfg, tok, correct_fn)
    pad = tok.pad_token_id
    per_epoch = math.ceil(len(examples) / (cfg.batch_size * cfg.grad_accum))
    steps = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * per_epoch))
    trainable = [p for p in model.backbone.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": trainable, "lr": cfg.learning_rate},
                             {"params": list(model.head.parameters()), "lr": cfg.head_learning_rate}], weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, 0, steps)
    loss_before = _mean_loss(model, examples, pad, device, cfg.batch_size)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train_log.jsonl"
    log_path.write_text("")
    rng, order, losses = random.Random(cfg.seed), [], []
    model.backbone.train()
    for step in range(1, steps + 1):
        total = 0.0
        for _ in range(cfg.grad_accum):
            if len(order) < cfg.batch_size:
                fresh = list(range(len(examples)))
                rng.shuffle(fresh)
                order += fresh
            batch, order = [examples[i] for i in order[:cfg.batch_size]], order[cfg.batch_size:]
            loss = _batch_loss(model, batch, pad, device) / cfg.grad_accum
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(trainable + list(model.head.parameters()), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
        if progress:
            progress(step, steps)
        if step % cfg.logging_steps == 0 or step == steps:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, "loss": total, "learning_rate": sched.get_last_lr()[0]}) + "\n")
    loss_after = _mean_loss(model, examples, pad, device, cfg.batch_size)
    backbone = model.backbone if cfg.full_finetune else model.backbone.merge_and_unload()
    meta = {"kind": cfg.kind, "format": asdict(cfg.path_format()), "base_model": base, "labels": asdict(cfg.labels()),
            "trees": len(train_trees), "label_stats": stats}

    def write(d: str) -> None:
        backbone.save_pretrained(str(Path(d) / "model"))
        tok.save_pretrained(str(Path(d) / "model"))
        save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()},
                  str(Path(d) / "head.safetensors"))
        (Path(d) / CONFIG_FILE).write_text(json.dumps(meta, indent=2, default=str))

    critic_dir = str(_atomic_dir(out / "critic", write))
    val = held_out_auc(critic_dir, cfg.kind, val_trees, correct_fn) if val_trees else {}
    result = CriticTrainResult(critic_dir=critic_dir, kind=cfg.kind, loss_before=loss_before, loss_after=loss_after,
                               losses=losses, steps=steps, examples=len(examples),
                               seconds=time.perf_counter() - started, label_stats=stats, val=val, config=cfg.to_dict())
    atomic_write_json(out / "train_result.json", json.loads(json.dumps(result.to_dict(), default=str)))
    return result


def held_out_auc(critic_dir: str, kind: str, trees: Sequence[Tree], correct_fn: CorrectFn = reward_correct) -> dict[str, Any]:
    """AUC of the trained critic on held-out trees beside that of every critic recorded in them."""
    from mcts_agent.critics import make_critic

    mine = critic_auc(make_critic(kind, path=critic_dir), trees, correct_fn)
    recorded = exploitation(list(trees), correct_fn)
    return {"trees": len(trees), "trained": {k: mine[k] for k in ("step_auc", "answer_auc", "steps", "answers")},
            "recorded": {"step_auc": recorded["step_auc"], "answer_auc": recorded["terminal_auc"]}}

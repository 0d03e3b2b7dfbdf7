"""Trained critics: a process reward model and a value model, learned from search trees.

Both are a language model with a scalar head (``ScalarHeadModel``): the text is the problem,
then each step followed by the step separator, built token by token (``encode_path``), and
the score of a step is the head's logit at the last token of its separator. The PRM is
trained on whole paths (a label at every step's separator, one forward per path); the value
model on single states (its last token). Either reads a node's value at its last token:
``sigmoid(logit)``, in [0, 1]. ``PRMCritic(aggregate="min")`` scores a node by its weakest step.

A critic directory (written by ``mcts_agent.training.critic_train``) holds ``model/`` (the
backbone, LoRA merged, with its tokenizer), ``head.safetensors`` and ``critic_config.json``.
``evaluate`` encodes every node and runs them in one batched pass: the prefix they all share
runs once (``hf_prefix``), otherwise left-padded chunks bounded by ``prefill_tokens``.
Critics see only the question and the steps (NodeView), never a reward or a gold answer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

from mcts_agent.critic import Critic, NodeView
from mcts_agent.errors import ConfigError, CriticError

KINDS = ("prm", "value")
AGGREGATES = ("last", "min")
CONFIG_FILE = "critic_config.json"


@dataclass
class PathFormat:
    """How a problem and its steps become the critic's tokens (training and inference alike)."""

    template: str = field(default="Problem: {question}\nSolution:\n", metadata={
        "help": "Text before the first step; {question} is filled in."})
    separator: str = field(default="\n", metadata={"help": "Appended to each step; its last token carries the step's score."})
    max_length: int = field(default=256, metadata={"help": "Longer inputs keep their last max_length tokens."})

    def __post_init__(self) -> None:
        if not isinstance(self.template, str) or "{question}" not in self.template:
            raise ConfigError(f"PathFormat.template must contain '{{question}}', got {self.template!r}")
        if not isinstance(self.separator, str) or not self.separator:
            raise ConfigError(f"PathFormat.separator must be a non-empty string, got {self.separator!r}")
        if not isinstance(self.max_length, int) or self.max_length < 8:
            raise ConfigError(f"PathFormat.max_length must be an int >= 8, got {self.max_length!r}")


def encode_path(tokenizer: Any, fmt: PathFormat, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
    """(token ids, index of each step's score token); steps are tokenized one by one, so a
    step's tokens never depend on what follows it. Cut to the last ``max_length`` tokens
    (steps whose score token falls off get index -1)."""
    enc = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    ids = enc(fmt.template.replace("{question}", question.strip()))
    sep = enc(fmt.separator)
    ends = []
    for step in steps:
        ids += enc(step.strip()) + sep
        ends.append(len(ids) - 1)
    cut = max(0, len(ids) - fmt.max_length)
    return ids[cut:], [e - cut if e >= cut else -1 for e in ends]


class ScalarHeadModel:
    """A backbone (``AutoModel``) and a linear head to one logit per token, callable like a
    causal LM whose "logits" are that score (so ``hf_prefix`` runs it with a shared prefix)."""

    def __init__(self, backbone: Any, head: Any) -> None:
        self.backbone, self.head = backbone, head

    def __call__(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, past_key_values: Any = None,
                 use_cache: bool = False, logits_to_keep: int = 0) -> Any:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            past_key_values=past_key_values, use_cache=use_cache)
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return SimpleNamespace(logits=self.head(hidden.to(self.head.weight.dtype)), past_key_values=out.past_key_values)

    def parameters(self) -> Any:
        yield from self.backbone.parameters()
        yield from self.head.parameters()


def read_critic_config(path: str | Path) -> dict[str, Any]:
    """The ``critic_config.json`` of a critic directory, with a clear error when it is not one."""
    p = Path(path).expanduser()
    cfg = p / CONFIG_FILE
    if not cfg.is_file() or not (p / "model").is_dir() or not (p / "head.safetensors").is_file():
        raise CriticError(f"{p} is not a trained critic directory: expected {CONFIG_FILE}, model/ and head.safetensors "
                          "(written by mcts_agent.training.critic_train.train_critic)")
    data = json.loads(cfg.read_text())
    if data.get("kind") not in KINDS:
        raise CriticError(f"{cfg} has kind {data.get('kind')!r}; expected one of {KINDS}")
    return data


def load_scalar_model(path: str | Path, device: str = "cpu") -> tuple[ScalarHeadModel, Any, PathFormat]:
    """(model, tokenizer, format) of a critic directory, in eval mode on ``device``."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    p = Path(path).expanduser()
    meta = read_critic_config(p)
    tok = AutoTokenizer.from_pretrained(str(p / "model"))
    backbone = AutoModel.from_pretrained(str(p / "model"), dtype=torch.float32).to(device).eval()
    state = load_file(str(p / "head.safetensors"))
    head = torch.nn.Linear(state["weight"].shape[1], 1).to(device)
    head.load_state_dict(state)
    return ScalarHeadModel(backbone, head.eval()), tok, PathFormat(**meta["format"])


@dataclass
class LearnedCriticStats:
    calls: int = 0
    nodes: int = 0
    shared_prefix_calls: int = 0
    seconds: float = 0.0


class LearnedCritic(Critic):
    """Value = sigmoid(head logit) at the node's last step; the model loads on first use."""

    kind = "value"

    def __init__(self, path: str | Path, device: str = "cpu", prefill_tokens: int = 8192, share_prefix: bool = True) -> None:
        if not isinstance(prefill_tokens, int) or prefill_tokens < 1:
            raise ConfigError(f"{type(self).__name__}.prefill_tokens must be an int >= 1, got {prefill_tokens!r}")
        self.path = Path(path).expanduser()
        meta = read_critic_config(self.path)
        if meta["kind"] != self.kind:
            raise CriticError(f"{self.path} holds a {meta['kind']!r} critic; load it as make_critic({meta['kind']!r}, "
                              f"path=...) (this is {self.kind!r})")
        self.meta, self.device, self.prefill_tokens, self.share_prefix = meta, device, prefill_tokens, share_prefix
        self.stats = LearnedCriticStats()
        self._loaded: tuple[ScalarHeadModel, Any, PathFormat] | None = None

    def _model(self) -> tuple[ScalarHeadModel, Any, PathFormat]:
        if self._loaded is None:
            self._loaded = load_scalar_model(self.path, self.device)
        return self._loaded

    def evaluate(self, nodes: Sequence[NodeView]) -> list[float]:
        import torch

        from mcts_agent.llm import hf_prefix

        model, tok, fmt = self._model()
        t0 = time.perf_counter()
        encoded = [encode_path(tok, fmt, n.question, n.steps) for n in nodes]
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        with torch.inference_mode():
            if self.kind == "prm" and getattr(self, "aggregate", "last") == "min":
                scores = self._min_over_steps(model, encoded, pad)
            else:
                ids = [e[0] or [pad] for e in encoded]
                logits = None
                if self.share_prefix:
                    logits = hf_prefix.shared_prefix_last_logits(model, ids, pad, torch.device(self.device), self.prefill_tokens)
                    self.stats.shared_prefix_calls += logits is not None
                if logits is None:
                    logits = torch.cat([c[:, -1] for c in self._chunks(model, ids, pad, keep_last=True)[1]])
                    logits = logits[torch.argsort(torch.tensor(self._order(ids)))]
                scores = torch.sigmoid(logits[:, 0].float()).tolist()
        self.stats.calls += 1
        self.stats.nodes += len(nodes)
        self.stats.seconds += time.perf_counter() - t0
        return scores

    def _order(self, ids: list[list[int]]) -> list[int]:
        return sorted(range(len(ids)), key=lambda i: len(ids[i]))

    def _chunks(self, model: ScalarHeadModel, ids: list[list[int]], pad: int, keep_last: bool) -> tuple[list, list]:
        """Left-padded forwards over ``ids`` sorted by length, each within ``prefill_tokens``;
        (chunks of indices, logits per chunk)."""
        import torch

        order, chunks, outs, start = self._order(ids), [], [], 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * len(ids[order[end]]) <= self.prefill_tokens:
                end += 1
            chunk = order[start:end]
            width = len(ids[chunk[-1]])
            x = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, i in enumerate(chunk):
                x[r, width - len(ids[i]):] = torch.tensor(ids[i])
                mask[r, width - len(ids[i]):] = 1
            x, mask = x.to(self.device), mask.to(self.device)
            out = model(x, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_(min=0),
                        logits_to_keep=1 if keep_last else 0)
            chunks.append(chunk)
            outs.append(out.logits[..., 0:1].float())
            start = end
        return chunks, outs

    def _min_over_steps(self, model: ScalarHeadModel, encoded: list[tuple[list[int], list[int]]], pad: int) -> list[float]:
        import torch

        ids = [e[0] or [pad] for e in encoded]
        scores = [0.5] * len(ids)
        for chunk, logits in zip(*self._chunks(model, ids, pad, keep_last=False)):
            width = logits.shape[1]
            for r, i in enumerate(chunk):
                offset = width - len(ids[i])
                ends = [e + offset for e in encoded[i][1] if e >= 0]
                if ends:
                    scores[i] = float(torch.sigmoid(logits[r, ends, 0]).min())
        return scores


class ValueCritic(LearnedCritic):
    """A trained value model: the estimated chance that the node's state leads to a correct answer."""

    name = "value"
    kind = "value"


class PRMCritic(LearnedCritic):
    """A trained process reward model: the score of the node's last step (``aggregate='last'``)
    or of its weakest step (``'min'``, one padded pass without the shared prefix)."""

    name = "prm"
    kind = "prm"

    def __init__(self, path: str | Path, device: str = "cpu", prefill_tokens: int = 8192, share_prefix: bool = True,
                 aggregate: str = "last") -> None:
        if aggregate not in AGGREGATES:
            raise ConfigError(f"PRMCritic.aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        super().__init__(path, device, prefill_tokens, share_prefix)
        self.aggregate = aggregate

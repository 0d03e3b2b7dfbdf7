"""Self-evaluation: read p("Yes") vs p("No") to "is this reasoning correct?" in one pass.

As in MCTS-DPO, the policy model itself judges a partial solution, but instead of
generating an answer we score the two possible answer tokens with
``backend.score``: all nodes x {positive, negative} go to the backend in ONE call,
and the value is ``p(pos) / (p(pos) + p(neg))``.

Two ways to ask (``SelfEvalConfig.mode``):

* ``"chat"`` (default, best for small instruct models): a fresh user turn holding
  the question, the numbered steps and the evaluation question, after two worked
  examples (one right, one wrong) so the model has seen the format, rendered with
  ``backend.format_chat``; the answer token opens the assistant's reply, so the
  default tokens are ``"Yes"`` / ``"No"`` with no leading space.
* ``"suffix"``: ``node.prompt`` (the policy's own text) plus a plain-text suffix;
  the default tokens are ``" Yes"`` / ``" No"`` as they follow ``"Answer:"``.
* ``"turn"``: ``node.prompt`` (the policy's chat, whose assistant turn holds the steps)
  continued in the backend's chat template: the assistant turn ends, a user turn asks
  ``question``, and the answer token opens the assistant's reply (``"Yes"`` / ``"No"``).

``"suffix"`` and ``"turn"`` prompts extend the policy's own prompt, so the planner can have
the backend score them while it generates the node, off that generation's KV cache
(fused evaluation, ``SearchConfig.fused_eval``). A node carrying such an evaluation of
exactly this critic's prompt and answers is valued from it; any other node is scored here.
``"chat"`` shows the model a fresh conversation (few-shot examples first), which no
generation's cache holds, so it is never fused; on a backend with a prefix cache
(transformers) a node's conversation still starts with its parent's, whose KV the parent's
evaluation left there, so only the new step and the question run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from mcts_agent.critics._render import EXAMPLES, chat, check_examples
from mcts_agent.critic import Critic, NodeView
from mcts_agent.errors import ConfigError, CriticError
from mcts_agent.llm.types import Backend

MODES = ("chat", "suffix", "turn")
FUSABLE_MODES = ("suffix", "turn")  # prompts that extend node.prompt

DEFAULT_TEMPLATE = (
    "Here is a problem and a partial solution.\n\n"
    "Problem: {question}\n\n"
    "Solution so far:\n{steps}\n\n"
    "Is this reasoning correct so far? Answer Yes or No."
)
DEFAULT_SUFFIX = "\n\nQuestion: Is the reasoning above correct so far? Answer Yes or No.\nAnswer:"
DEFAULT_QUESTION = "Is the reasoning above correct so far? Answer Yes or No."
_MARK = "\x00steps\x00"  # stands for the assistant's text when the turn suffix is rendered


@dataclass
class SelfEvalConfig:
    """How the evaluation question is asked and which tokens mean yes / no."""

    mode: str = field(default="chat", metadata={"help": "'chat': a new conversation via format_chat; 'suffix': node.prompt + "
                                                        "suffix; 'turn': node.prompt + a user turn asking question"})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "User message for chat mode; {question} and {steps} are filled in."})
    system: str | None = field(default=None, metadata={"help": "Optional system message for chat mode."})
    examples: tuple[tuple[str, tuple[str, ...], bool], ...] = field(default=EXAMPLES, metadata={"help": "Chat mode few-shot: (question, steps, correct?) answered with positive[0] / negative[0]; () for none."})
    suffix: str = field(default=DEFAULT_SUFFIX, metadata={"help": "Text appended to node.prompt in suffix mode."})
    question: str = field(default=DEFAULT_QUESTION, metadata={"help": "The user turn's text in turn mode."})
    positive: tuple[str, ...] | None = field(default=None, metadata={"help": "Continuations meaning 'correct' (probabilities summed). Default: 'Yes' (chat) / ' Yes' (suffix)."})
    negative: tuple[str, ...] | None = field(default=None, metadata={"help": "Continuations meaning 'incorrect'. Default: 'No' (chat) / ' No' (suffix)."})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"SelfEvalConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "chat" and "{steps}" not in self.template:
            raise ConfigError(f"SelfEvalConfig.template must contain '{{steps}}', got {self.template!r}")
        self.examples = check_examples("SelfEvalConfig", self.examples, bool)
        lead = " " if self.mode == "suffix" else ""
        self.positive = _tokens("positive", self.positive, (lead + "Yes",))
        self.negative = _tokens("negative", self.negative, (lead + "No",))
        overlap = set(self.positive) & set(self.negative)
        if overlap:
            raise ConfigError(f"SelfEvalConfig.positive and .negative share {sorted(overlap)}; they must differ")


def _tokens(what: str, value: Sequence[str] | str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    if isinstance(value, str):
        value = (value,)
    value = tuple(value)
    if not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"SelfEvalConfig.{what} must be non-empty strings, got {value!r}")
    return value


class SelfEvalCritic(Critic):
    """Value = p(yes) / (p(yes) + p(no)): read off each node's fused evaluation when it
    carries one of this critic's exact prompt, else from one batched backend call."""

    name = "self-eval"

    def __init__(self, backend: Backend, config: SelfEvalConfig | None = None) -> None:
        self.backend = backend
        self.config = config or SelfEvalConfig()
        self.answers: tuple[str, ...] = (*self.config.positive, *self.config.negative)  # type: ignore[misc]
        self.fused = 0  # nodes valued from a fused evaluation
        self.scored = 0  # nodes scored by this critic's own backend call
        self._suffix: str | None = None

    def suffix(self) -> str:
        """What follows ``node.prompt`` in suffix and turn mode."""
        if self.config.mode == "suffix":
            return self.config.suffix
        if self.config.mode != "turn":
            raise ConfigError(f"SelfEvalCritic.suffix: mode {self.config.mode!r} does not extend node.prompt")
        if self._suffix is None:
            self._suffix = turn_suffix(self.backend, self.config.question)
        return self._suffix

    def prompt(self, node: NodeView) -> str:
        """The text the answer token is scored after."""
        c = self.config
        if c.mode in FUSABLE_MODES:
            return node.prompt + self.suffix()
        pos, neg = c.positive[0].strip(), c.negative[0].strip()  # type: ignore[index]
        examples = [(q, steps, pos if correct else neg) for q, steps, correct in c.examples]
        return self.backend.format_chat(chat(c.template, node, c.system, examples))

    def prompt_suffix(self) -> tuple[str, tuple[str, ...]] | None:
        return (self.suffix(), self.answers) if self.config.mode in FUSABLE_MODES else None

    def evaluate(self, nodes: Sequence[NodeView]) -> list[float]:
        rows: list[Sequence[float] | None] = [self._fused_row(node) for node in nodes]
        todo = [i for i, r in enumerate(rows) if r is None]
        if todo:
            for i, row in zip(todo, self._score([nodes[i] for i in todo])):
                rows[i] = row
        self.fused += len(nodes) - len(todo)
        self.scored += len(todo)
        return [self._value(i, row) for i, row in enumerate(rows)]  # type: ignore[arg-type]

    def _fused_row(self, node: NodeView) -> Sequence[float] | None:
        """The node's fused evaluation, if it scored exactly this critic's prompt and answers."""
        ev = node.evaluation
        if ev is None or self.config.mode not in FUSABLE_MODES or ev.candidates != self.answers:
            return None
        if len(ev.logprobs) != len(self.answers) or ev.text != self.prompt(node):
            return None
        return ev.logprobs

    def _score(self, nodes: Sequence[NodeView]) -> list[Sequence[float]]:
        """One ``next_token_logprobs`` call for ``nodes``: a row of answer log-likelihoods each."""
        rows = self.backend.next_token_logprobs([self.prompt(node) for node in nodes], list(self.answers))
        if len(rows) != len(nodes) or any(len(r) != len(self.answers) for r in rows):
            raise CriticError(f"backend.next_token_logprobs returned {len(rows)} rows for {len(nodes)} prompts "
                              f"x {len(self.answers)} answers")
        return rows

    def _value(self, i: int, logprobs: Sequence[float]) -> float:
        row = [float(x) for x in logprobs]
        if any(math.isnan(x) or x == math.inf for x in row):
            raise CriticError(f"backend.score returned {row} for node {i} (answers {list(self.answers)}); "
                              "expected log-likelihoods <= 0")
        k = len(self.config.positive)  # type: ignore[arg-type]
        return _p_positive(row[:k], row[k:])


def turn_suffix(backend: Backend, question: str) -> str:
    """The text that ends the assistant's turn, asks ``question`` as a user and opens the
    assistant's reply, in ``backend``'s chat template (what follows the assistant's text)."""
    head = backend.format_chat([{"role": "user", "content": "Q"}])
    full = backend.format_chat([{"role": "user", "content": "Q"}, {"role": "assistant", "content": _MARK},
                                {"role": "user", "content": question}])
    if not full.startswith(head + _MARK):
        raise ConfigError("SelfEvalConfig.mode 'turn' needs a chat template that writes an assistant message right "
                          f"after the generation prompt; {backend.name!r} renders {full[:200]!r}")
    return full[len(head) + len(_MARK):]


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs)
    if m == -math.inf:
        return -math.inf
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _p_positive(pos: Sequence[float], neg: Sequence[float]) -> float:
    """p(pos) / (p(pos) + p(neg)), computed stably; 0.5 when both are impossible."""
    a, b = _logsumexp(pos), _logsumexp(neg)
    if a == b == -math.inf:
        return 0.5
    return 1.0 / (1.0 + math.exp(b - a)) if b - a < 700 else 0.0

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from mcts_agent.critics._render import EXAMPLES, chat, check_examples
from mcts_agent.critic import Critic, NodeView
from mcts_agent.errors import ConfigError, CriticError
from mcts_agent.llm.types import Backend

MODES = ("chat", "suffix")

DEFAULT_TEMPLATE = (
    "Here is a problem and a partial solution.\n\n"
    "Problem: {question}\n\n"
    "Solution so far:\n{steps}\n\n"
    "Is this reasoning correct so far? Answer Yes or No."
)
DEFAULT_SUFFIX = "\n\nQuestion: Is the reasoning above correct so far? Answer Yes or No.\nAnswer:"


@dataclass
class SelfEvalConfig:
    """How the evaluation question is asked and which tokens mean yes / no."""

    mode: str = field(default="chat", metadata={"help": "'chat': a new user turn via format_chat; 'suffix': node.prompt + suffix."})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "User message for chat mode; {question} and {steps} are filled in."})
    system: str | None = field(default=None, metadata={"help": "Optional system message for chat mode."})
    examples: tuple[tuple[str, tuple[str, ...], bool], ...] = field(default=EXAMPLES, metadata={"help": "Chat mode few-shot: (question, steps, correct?) answered with positive[0] / negative[0]; () for none."})
    suffix: str = field(default=DEFAULT_SUFFIX, metadata={"help": "Text appended to node.prompt in suffix mode."})
    positive: tuple[str, ...] | None = field(default=None, metadata={"help": "Continuations meaning 'correct' (probabilities summed). Default: 'Yes' (chat) / ' Yes' (suffix)."})
    negative: tuple[str, ...] | None = field(default=None, metadata={"help": "Continuations meaning 'incorrect'. Default: 'No' (chat) / ' No' (suffix)."})

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"SelfEvalConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "chat" and "{steps}" not in self.template:
            raise ConfigError(f"SelfEvalConfig.template must contain '{{steps}}', got {self.template!r}")
        self.examples = check_examples("SelfEvalConfig", self.examples, bool)
        lead = "" if self.mode == "chat" else " "
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
    """Value = p(yes) / (p(yes) + p(no)) from one batched ``backend.score`` call."""

    name = "self-eval"

    def __init__(self, backend: Backend, config: SelfEvalConfig | None = None) -> None:
        self.backend = backend
        self.config = config or SelfEvalConfig()

    def prompt(self, node: NodeView) -> str:
        """The text the answer token is scored after."""
        c = self.config
        if c.mode == "suffix":
            return node.prompt + c.suffix
        pos, neg = c.positive[0].strip(), c.negative[0].strip()  # type: ignore[index]
        examples = [(q, steps, pos if correct else neg) for q, steps, correct in c.examples]
        return self.backend.format_chat(chat(c.template, node, c.system, examples))

    def evaluate(self, nodes: Sequence[NodeView]) -> list[float]:
        pos, neg = self.config.positive, self.config.negative
        answers = (*pos, *neg)  # type: ignore[misc]
        rows = self.backend.next_token_logprobs([self.prompt(node) for node in nodes], list(answers))
        if len(rows) != len(nodes) or any(len(r) != len(answers) for r in rows):
            raise CriticError(f"backend.next_token_logprobs returned {len(rows)} rows for {len(nodes)} prompts "
                              f"x {len(answers)} answers")
        values = []
        for i in range(len(nodes)):
            row = [float(x) for x in rows[i]]
            if any(math.isnan(x) or x == math.inf for x in row):
                raise CriticError(f"backend.score returned {row} for node {i} (answers {list(answers)}); expected log-likelihoods <= 0")
            values.append(_p_positive(row[:len(pos)], row[len(pos):]))  # type: ignore[arg-type]
        return values


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

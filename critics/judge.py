"""LLM judge: a short rationale and a 0-10 score per node, in one generate call.

Like SWE-Search's value agent, the model writes a sentence of rationale and ends
with ``Score: N`` (two worked examples come first: tiny models copy the format). Parsing is forgiving (``**Score:** 7``, ``score = 7/10``,
``7 out of 10``); output with no score, or a score outside ``[0, scale]``, gets
``JudgeConfig.default`` and is counted in ``LLMJudgeCritic.stats``.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from typing import Sequence

from mcts_agent.critics._render import EXAMPLES, chat, check_examples
from mcts_agent.critic import Critic, NodeView
from mcts_agent.errors import ConfigError, CriticError
from mcts_agent.llm.types import Backend, GenerationRequest

DEFAULT_TEMPLATE = (
    "Rate the partial solution to this problem.\n\n"
    "Problem: {question}\n\n"
    "Solution so far:\n{steps}\n\n"
    "Give one sentence of rationale, then a last line 'Score: N' with N from 0 (wrong) to 10 (certainly correct)."
)
# Few-shot replies to the shared examples (right, then wrong): they teach the format.
_REPLIES = {True: "The step adds the red and blue marbles correctly.\nScore: 9",
            False: "Money spent must be subtracted, not added.\nScore: 1"}
DEFAULT_EXAMPLES = tuple((q, steps, _REPLIES[ok]) for q, steps, ok in EXAMPLES)

_NUM = r"(-?\d+(?:\.\d+)?)"
_SCORE = re.compile(r"\bscore\b(?:\s*(?:is|of))?[\s*:=_-]*?" + _NUM + r"(?:\s*(?:/|out of)\s*(\d+))?", re.IGNORECASE)
_RATIO = re.compile(_NUM + r"\s*(?:/|out of)\s*(\d+)\b", re.IGNORECASE)


class Verdict(str, enum.Enum):
    """How one judgement was parsed."""

    OK = "ok"
    MISSING = "missing"  # no score found
    OUT_OF_RANGE = "out_of_range"  # a score outside [0, scale]


@dataclass(frozen=True)
class Judgement:
    """One parsed model output: the value used, the score read, and the rationale."""

    value: float
    score: float | None
    rationale: str
    verdict: Verdict


@dataclass
class JudgeConfig:
    """The judge prompt, its sampling, its score scale and the fallback value."""

    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "User message; {question} and {steps} are filled in."})
    system: str | None = field(default=None, metadata={"help": "Optional system message."})
    examples: tuple[tuple[str, tuple[str, ...], str], ...] = field(default=DEFAULT_EXAMPLES, metadata={"help": "Few-shot (question, steps, reply) exchanges shown first; () for none."})
    max_tokens: int = field(default=96, metadata={"help": "Token budget of each judgement."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (deterministic)."})
    seed: int | None = field(default=None, metadata={"help": "Sampling seed when temperature > 0."})
    scale: float = field(default=10.0, metadata={"help": "The top score; value = score / scale."})
    default: float = field(default=0.5, metadata={"help": "Value of an unparseable or out-of-range judgement."})

    def __post_init__(self) -> None:
        if "{steps}" not in self.template:
            raise ConfigError(f"JudgeConfig.template must contain '{{steps}}', got {self.template!r}")
        self.examples = check_examples("JudgeConfig", self.examples, str)
        if not (isinstance(self.max_tokens, int) and self.max_tokens >= 1):
            raise ConfigError(f"JudgeConfig.max_tokens must be an int >= 1, got {self.max_tokens!r}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"JudgeConfig.temperature must be a finite number >= 0, got {self.temperature!r}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"JudgeConfig.scale must be a finite number > 0, got {self.scale!r}")
        if not (math.isfinite(self.default) and 0.0 <= self.default <= 1.0):
            raise ConfigError(f"JudgeConfig.default must be in [0, 1], got {self.default!r}")


@dataclass
class JudgeStats:
    """Counters over the critic's lifetime."""

    calls: int = 0
    judged: int = 0
    parsed: int = 0
    missing: int = 0
    out_of_range: int = 0

    @property
    def unparseable(self) -> int:
        """Judgements that fell back to the default value."""
        return self.missing + self.out_of_range


def parse_judgement(text: str, scale: float = 10.0, default: float = 0.5) -> Judgement:
    """Read the last ``Score: N`` (else the last ``N/10``) in ``text``; see ``Verdict``."""
    matches = list(_SCORE.finditer(text))
    if not matches:  # "7/10" or "7 out of 10", but not an unrelated fraction like "3/4"
        matches = [m for m in _RATIO.finditer(text) if float(m.group(2)) == scale]
    if not matches:
        return Judgement(default, None, text.strip(), Verdict.MISSING)
    m = matches[-1]
    score, denom = float(m.group(1)), float(m.group(2)) if m.group(2) else scale
    rationale = text[:m.start()].strip() or text.strip()
    if denom <= 0 or not 0.0 <= score <= denom:
        return Judgement(default, score, rationale, Verdict.OUT_OF_RANGE)
    return Judgement(score / denom, score, rationale, Verdict.OK)


class LLMJudgeCritic(Critic):
    """Asks the model for a rationale and a 0-10 score, for the whole batch in one call."""

    name = "judge"

    def __init__(self, backend: Backend, config: JudgeConfig | None = None) -> None:
        self.backend = backend
        self.config = config or JudgeConfig()
        self.stats = JudgeStats()
        self.last_judgements: list[Judgement] = []

    @property
    def last_rationales(self) -> list[str]:
        """The rationales of the last batch, in node order."""
        return [j.rationale for j in self.last_judgements]

    def prompt(self, node: NodeView) -> str:
        c = self.config
        return self.backend.format_chat(chat(c.template, node, c.system, c.examples))

    def evaluate(self, nodes: Sequence[NodeView]) -> list[float]:
        c = self.config
        requests = [GenerationRequest(prompt=self.prompt(n), n=1, max_tokens=c.max_tokens,
                                      temperature=c.temperature, seed=c.seed) for n in nodes]
        outputs = self.backend.generate(requests)
        if len(outputs) != len(requests):
            raise CriticError(f"backend.generate returned {len(outputs)} results for {len(requests)} judge requests")
        self.last_judgements = [parse_judgement(out[0].text, c.scale, c.default) for out in outputs]
        self.stats.calls += 1
        self.stats.judged += len(nodes)
        for j in self.last_judgements:
            if j.verdict is Verdict.OK:
                self.stats.parsed += 1
            elif j.verdict is Verdict.MISSING:
                self.stats.missing += 1
            else:
                self.stats.out_of_range += 1
        return [j.value for j in self.last_judgements]

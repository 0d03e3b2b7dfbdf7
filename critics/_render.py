"""Shared prompt pieces for critics that ask a model about a partial solution."""

from __future__ import annotations

from typing import Sequence

from mcts_agent.critic import NodeView
from mcts_agent.errors import ConfigError

# Worked examples shown before the real question (few-shot): tiny instruct models follow
# a format far more reliably after seeing it. (question, steps, is the reasoning correct?)
EXAMPLES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("A bag has 4 red and 6 blue marbles. How many marbles are in the bag?",
     ("There are 4 + 6 = 10 marbles.",), True),
    ("Ann has 10 dollars and spends 3. How much money is left?",
     ("She has 10 + 3 = 13 dollars left.",), False),
)


def render_steps(steps: Sequence[str], empty: str = "(no steps yet)") -> str:
    """Steps as numbered lines, or ``empty`` at the root."""
    kept = [s.strip() for s in steps if s.strip()]
    if not kept:
        return empty
    return "\n".join(f"Step {i}: {s}" for i, s in enumerate(kept, 1))


def fill(template: str, question: str, steps: Sequence[str]) -> str:
    """Fill ``{question}`` and ``{steps}`` in ``template`` (other braces are kept as written)."""
    return template.replace("{question}", question.strip()).replace("{steps}", render_steps(steps))


def fill_node(template: str, node: NodeView) -> str:
    return fill(template, node.question, node.steps)


def chat(template: str, node: NodeView, system: str | None,
         examples: Sequence[tuple[str, Sequence[str], str]]) -> list[dict[str, str]]:
    """System message, one user/assistant exchange per example, then the question about ``node``."""
    messages = [{"role": "system", "content": system}] if system else []
    for question, steps, reply in examples:
        messages.append({"role": "user", "content": fill(template, question, steps)})
        messages.append({"role": "assistant", "content": reply})
    messages.append({"role": "user", "content": fill_node(template, node)})
    return messages


def check_examples(owner: str, examples: object, reply_type: type) -> tuple:
    """Validate ``(question, steps, reply)`` triples; return them as a tuple."""
    if not isinstance(examples, (tuple, list)):
        raise ConfigError(f"{owner}.examples must be a sequence of (question, steps, reply) triples, got {examples!r}")
    for i, ex in enumerate(examples):
        ok = (isinstance(ex, (tuple, list)) and len(ex) == 3 and isinstance(ex[0], str)
              and isinstance(ex[1], (tuple, list)) and all(isinstance(s, str) for s in ex[1])
              and isinstance(ex[2], reply_type))
        if not ok:
            raise ConfigError(f"{owner}.examples[{i}] must be (question: str, steps: tuple[str, ...], "
                              f"reply: {reply_type.__name__}), got {ex!r}")
    return tuple((q, tuple(s), r) for q, s, r in examples)

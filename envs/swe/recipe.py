"""The SWE-Search recipe: a value agent scoring nodes, a discriminator picking the final patch.

* ``SWEValueCritic``: the LLM judge (``critics.judge``: one sentence of explanation, then
  ``Score: N``) shown what a SWE-Search value agent sees: the issue, the last actions with
  their (capped) observations, and the current patch. One batched call per round.
* ``discriminate``: among a tree's finished candidate patches, several sampled judgements
  (one request with ``n`` samples) each name the candidate that fixes the issue; the vote
  picks one, ties going to the earlier candidate (callers order them best first).
* ``swe_search``: MCTS with the value agent, then the discriminator over each tree's
  submitted patches; returns the chosen patch per task.

The agent's own reproduction tests are the env's visible feedback: ``create`` a test, then
``run_tests`` it in the sandbox (the system prompt asks for it).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from mcts_agent.critic import NodeView
from mcts_agent.critics.judge import JudgeConfig, LLMJudgeCritic
from mcts_agent.env import Task
from mcts_agent.llm.types import Backend, GenerationRequest
from mcts_agent.tree import Tree

VALUE_SYSTEM = ("You review a software engineer's progress on fixing an issue. Give one sentence of explanation, then "
                "a last line 'Score: N' with N from 0 (no progress or harmful) to 10 (the issue is surely fixed).")
VALUE_EXAMPLES = (
    ("Issue: add() returns a - b instead of a + b.\n\nLast actions:\n> view(\"calc.py\")\n    1 def add(a, b):\n"
     "    2     return a - b\n\nCurrent patch:\n(none)", "The engineer found the faulty line but has not changed it yet.\n"
     "Score: 4"),
    ("Issue: add() returns a - b instead of a + b.\n\nLast actions:\n> replace(\"calc.py\", \"a - b\", \"a + b\")\n"
     "replaced 1 occurrence in calc.py\n\nCurrent patch:\n-    return a - b\n+    return a + b",
     "The patch changes exactly the wrong operator to the right one.\nScore: 9"),
)
TURNS_SHOWN, OBS_CHARS, PATCH_CHARS = 4, 400, 1500
_ANSWER = re.compile(r"answer\s*[:=]?\s*(?:candidate\s*)?(\d+)", re.IGNORECASE)


def progress_text(node: NodeView) -> str:
    """What the value agent reads about ``node``: the issue, recent turns, the current patch."""
    state = node.state
    turns = state.turns[-TURNS_SHOWN:] if state is not None else ()
    shown = "\n".join(f"> {t.action.strip()[:300]}\n{(t.observation or '')[:OBS_CHARS]}" for t in turns) or "(none yet)"
    patch = ((state.payload or {}).get("patch", "") if state is not None else "") or "(none)"
    return f"Issue: {node.question.strip()}\n\nLast actions:\n{shown}\n\nCurrent patch:\n{patch[:PATCH_CHARS]}"


class SWEValueCritic(LLMJudgeCritic):
    """The judge as SWE-Search's value agent (explanation + score) over trajectories and patches."""

    name = "swe-value"

    def __init__(self, backend: Backend, config: JudgeConfig | None = None) -> None:
        super().__init__(backend, config or JudgeConfig(system=VALUE_SYSTEM, examples=(), max_tokens=80))

    def prompt(self, node: NodeView) -> str:
        messages = [{"role": "system", "content": self.config.system or VALUE_SYSTEM}]
        for text, reply in VALUE_EXAMPLES:
            messages += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
        messages.append({"role": "user", "content": progress_text(node)})
        return self.backend.format_chat(messages)


@dataclass(frozen=True)
class Choice:
    """The discriminator's pick: the candidate's index and every judgement's vote (None: unreadable)."""

    index: int
    votes: tuple[int | None, ...]


def read_vote(text: str, candidates: int) -> int | None:
    """The candidate (1-based in the text, 0-based here) a judgement names, or None."""
    found = _ANSWER.findall(text) or re.findall(r"\b(\d+)\b", text)
    for n in reversed(found):
        if 1 <= int(n) <= candidates:
            return int(n) - 1
    return None


def discriminate(backend: Backend, question: str, patches: Sequence[str], *, judgements: int = 5,
                 temperature: float = 0.7, seed: int | None = 0, max_tokens: int = 48) -> Choice:
    """Pick one of ``patches`` for the issue ``question`` by a vote of ``judgements`` sampled judgements."""
    if not patches:
        raise ValueError("discriminate needs at least one candidate patch")
    if len(patches) == 1:
        return Choice(0, ())
    listing = "\n\n".join(f"Candidate {i}:\n{p[:PATCH_CHARS]}" for i, p in enumerate(patches, 1))
    user = (f"Issue:\n{question.strip()}\n\n{listing}\n\nWhich candidate patch fixes the issue? Explain in one "
            f"sentence, then end with 'Answer: N' (N from 1 to {len(patches)}).")
    prompt = backend.format_chat([{"role": "user", "content": user}])
    (outs,) = backend.generate([GenerationRequest(prompt, n=judgements, max_tokens=max_tokens,
                                                  temperature=temperature, seed=seed)])
    votes = tuple(read_vote(o.text, len(patches)) for o in outs)
    counts = Counter(v for v in votes if v is not None)
    if not counts:
        return Choice(0, votes)
    best = max(counts.values())
    return Choice(min(i for i, c in counts.items() if c == best), votes)


def candidates(tree: Tree) -> list[str]:
    """The distinct submitted patches of ``tree``, most visited first (non-empty only)."""
    seen: dict[str, int] = {}
    for node in tree.terminals():
        state = node.state
        patch = (state.payload or {}).get("patch", "") if state is not None else ""
        if patch.strip():
            seen[patch] = max(seen.get(patch, 0), node.visits)
    return sorted(seen, key=lambda p: -seen[p])


def swe_search(tasks: Sequence[Task], env: Any, backend: Backend, config: Any, *, judgements: int = 5
               ) -> tuple[list[Tree], list[str]]:
    """MCTS with ``SWEValueCritic``, then ``discriminate`` over each tree's candidates: (trees, chosen patches)."""
    from mcts_agent.search import run_search

    trees = run_search(tasks, env, backend, config, SWEValueCritic(backend))
    chosen = []
    for tree, task in zip(trees, tasks):
        cands = candidates(tree)
        chosen.append(cands[discriminate(backend, task.question, cands, judgements=judgements).index] if cands else "")
    return trees, chosen

"""MATH-style problems whose final answer is written as ``\\boxed{...}`` (any LaTeX value)."""

from __future__ import annotations

import os
from typing import Any, Sequence

from mcts_agent.envs.base import RewardMode, Task
from mcts_agent.envs.loading import read_records, require_field, select
from mcts_agent.envs.math.answers import boxed_equivalent, find_boxed
from mcts_agent.envs.math.common import MathEnv
from mcts_agent.errors import EnvError

SAMPLE_TASKS = (
    Task(id="sample-0", question="What is $\\frac{1}{2} + \\frac{1}{4}$?", answer="\\frac{3}{4}"),
    Task(id="sample-1", question="Solve $2x + 3 = 11$ for $x$.", answer="4"),
)


class BoxedEnv(MathEnv):
    """A step is final when it contains a non-empty ``\\boxed{...}``; answers are compared
    by value with math-verify (``\\frac{3}{4}`` == ``0.75``). A numeric gold is checked
    through ``normalize_numeric`` first, as in GSM8K (``boxed_equivalent``): "1\\,000" is
    1000, "7 \\text{ or } 8" is wrong."""

    answer_format = "The answer is \\boxed{N}."
    example_question = "What is $\\frac{1}{2} + \\frac{1}{3}$?"
    example_steps = ("$\\frac{1}{2} = \\frac{3}{6}$ and $\\frac{1}{3} = \\frac{2}{6}$.",
                     "$\\frac{3}{6} + \\frac{2}{6} = \\frac{5}{6}$.",
                     "The answer is \\boxed{\\frac{5}{6}}.")

    def __init__(self, tasks: Sequence[Task] = (), *, data: str | None = None, split: str = "test",
                 limit: int | None = None, step_delimiter: str = "\n", few_shot: bool = True,
                 max_steps: int = 10, reward_mode: RewardMode | str = RewardMode.NONE,
                 render_mode: str | None = None) -> None:
        if data is not None:
            tasks = list(tasks) + load_boxed(data, split=split, limit=limit)
        super().__init__(tasks, step_delimiter=step_delimiter, few_shot=few_shot, max_steps=max_steps,
                         reward_mode=reward_mode, render_mode=render_mode)

    def extract_answer(self, step: str) -> str | None:
        return find_boxed(step) or None

    def verify(self, answer: str | None, task: Task) -> bool:
        return task.answer is not None and boxed_equivalent(answer, task.answer)


def load_boxed(path_or_id: str | os.PathLike[str] | None, split: str = "test", limit: int | None = None,
               seed: int | None = None, subset: str | None = None, **_: Any) -> list[Task]:
    """MATH-style tasks: ``problem`` (or ``question``) plus ``answer``, or a ``solution``
    whose last ``\\boxed{}`` is the gold answer. JSONL file, folder, or ``datasets`` id."""
    source = os.fspath(path_or_id) if path_or_id is not None else None
    tasks = []
    for i, rec in select(read_records(source, split, subset=subset), limit, seed):
        where = f"{source} record {i}"
        question = require_field(rec, ("problem", "question"), where)
        gold = rec.get("answer")
        if gold is None:
            solution = require_field(rec, ("solution",), where)
            gold = find_boxed(solution)
            if not gold:
                raise EnvError(f"{where}: solution has no \\boxed{{...}} answer and there is no 'answer' field")
        meta = {k: rec[k] for k in ("level", "type", "subject") if isinstance(rec.get(k), (str, int))}
        tasks.append(Task(id=f"boxed-{split}-{i}", question=question, answer=str(gold).strip(),
                          meta={"split": split, "index": i, **meta}))
    return tasks

CHECK_KWARGS = {"tasks": SAMPLE_TASKS}  # what the check_env test over the registry builds

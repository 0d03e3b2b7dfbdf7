"""A tiny text env for unit tests of search logic (no model, no dataset)."""

from __future__ import annotations

import re

from mcts_agent.envs.base import Task, TextEnv


class ToyMathEnv(TextEnv):
    """Steps are free text; a step "ANSWER: x" ends the episode with answer x."""

    def messages(self, task: Task) -> list[dict[str, str]]:
        return [{"role": "user", "content": task.question}]

    def extract_answer(self, step: str) -> str | None:
        m = re.search(r"ANSWER:\s*(\S+)", step)
        return m.group(1) if m else None

    def verify(self, answer: str | None, task: Task) -> bool:
        return answer is not None and answer == task.answer


def toy_tasks(n: int = 2) -> list[Task]:
    return [Task(id=f"t{i}", question=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(n)]

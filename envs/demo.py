"""``demo/counter``: the smallest multi-turn world, for docs, tests and the env-parallelism benchmark.

The task asks to bring a counter from 0 to a target. Actions are ``add(N)`` (N an integer
from -9 to 9) or ``submit()``; the world answers with the new total, or with an error
observation for anything else (the episode goes on). ``submit()`` ends the episode; it is
solved when the total equals the target. ``delay`` makes every step sleep that many
seconds, like a slow tool, a page load or a test run.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any, Sequence

from mcts_agent.env import EnvState, Task
from mcts_agent.envs.agent import AgentEnv, Outcome
from mcts_agent.errors import EnvError

_ADD = re.compile(r"^\s*add\(\s*(-?\d+)\s*\)\s*$")
_SUBMIT = re.compile(r"^\s*submit\(\s*\)\s*$")
SYSTEM = ("You control a counter that starts at 0. Reply with exactly one action per turn: "
          "add(N) with N from -9 to 9, or submit() when the counter equals the target.")


def counter_tasks(n: int = 8, seed: int = 0) -> list[Task]:
    rng = random.Random(seed)
    return [Task(id=f"counter-{seed}-{i}", question=f"Bring the counter to {t}.", answer=str(t), meta={"target": t})
            for i, t in enumerate(rng.randint(1, 20) for _ in range(n))]


def load_counter(path: Any = None, split: str = "test", limit: int | None = None, seed: int | None = None,
                 **kwargs: Any) -> list[Task]:
    if path is not None:
        raise EnvError(f"demo/counter generates its tasks; got a data path {path!r}")
    return counter_tasks(limit or 8, seed or 0)


class CounterEnv(AgentEnv):
    """Reach the target with ``add(N)`` actions, then ``submit()``."""

    def __init__(self, tasks: Sequence[Task] | None = None, *, n: int = 8, seed: int = 0, delay: float = 0.0,
                 max_steps: int = 8, **kwargs: Any) -> None:
        if not delay >= 0:
            raise EnvError(f"delay must be >= 0 seconds, got {delay!r}")
        super().__init__(counter_tasks(n, seed) if tasks is None else tasks, max_steps=max_steps, **kwargs)
        self.delay = delay

    def messages(self, task: Task) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task.question}]

    def start(self, task: Task) -> tuple[Any, Any]:
        return {"total": 0}, None

    def act(self, state: EnvState, action: str) -> Outcome:
        if self.delay:
            time.sleep(self.delay)
        total = state.payload["total"]
        if _SUBMIT.match(action):
            return Outcome(f"Submitted {total}.", {"total": total}, terminated=True, answer=str(total),
                           reward=float(str(total) == str(state.task.meta.get("target"))))
        m = _ADD.match(action)
        if m is None or not -9 <= int(m.group(1)) <= 9:
            return Outcome(f"Error: expected add(N) with N in -9..9 or submit(), got {action.strip()[:80]!r}.",
                           {"total": total})
        total += int(m.group(1))
        return Outcome(f"The counter is {total}.", {"total": total})

    def verify_state(self, state: EnvState, task: Task) -> bool:
        return state.terminated and state.answer == str(task.meta["target"])


CHECK_KWARGS = {"n": 2}

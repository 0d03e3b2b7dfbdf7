"""What HumanEval and MBPP share: step modes, the code answer, sandboxed verification.

Tasks: ``question`` is the problem as the policy may see it; ``answer`` holds the HIDDEN
test code (stripped from the task the env keeps unless ``reward_mode="outcome"``);
``meta["visible_tests"]`` holds tests that are part of the problem statement.

Step modes:

- ``"function"``: one step is the whole code; the policy's text stops at the closing
  code fence (``step_delimiter = "\\n```"``), and every step ends the episode.
- ``"chunk"``: one step is a block of code up to a blank line (``"\\n\\n"``). The episode
  ends when a step holds the end marker (a code fence), when a step is blank, or when
  the code so far parses and the new step starts a top-level statement that is not a
  definition or import (test or driver code after a finished function; it is dropped).
  Steps must keep their leading whitespace.

Verification: hidden tests of the trusted shape (``assert f(x) == y`` and its tolerance
forms; see ``mcts_agent.envs.code.trusted``) never enter the sandbox, only their inputs do,
and the framework judges the returned values; other tests run inside the sandbox.

Rewards: ``reward_mode="outcome"`` gives 1.0 when the hidden tests pass. With
``visible_test_reward=w > 0`` a terminal step that does not earn 1.0 gets
``w * (fraction of visible tests passed)``, in either reward mode: visible tests are
part of the problem, so evaluation may use them; hidden tests never reach search there.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

from mcts_agent.env import Transition

from mcts_agent.envs.base import EnvState, RewardMode, Task, TextEnv
from mcts_agent.envs.code.pool import SandboxPool
from mcts_agent.envs.code.programs import FENCE, cut_at_fence, parses
from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig, SandboxResult, VerdictSource
from mcts_agent.errors import EnvError

STEP_MODES = ("function", "chunk")
_CONTINUES = ("def ", "async def ", "class ", "@", "import ", "from ", "#")


class CodeEnv(TextEnv):
    """Base class of code environments; subclasses define the prompt and the program."""

    system_prompt = "You are an expert Python programmer."
    secret_gold = True  # the gold is hidden tests: the runner keeps it out of tree files

    def __init__(self, tasks: Sequence[Task] = (), *, step_mode: str = "function", max_steps: int | None = None,
                 reward_mode: RewardMode | str = RewardMode.NONE, visible_test_reward: float = 0.0,
                 sandbox: SandboxConfig | Sandbox | None = None, max_workers: int | None = None,
                 render_mode: str | None = None) -> None:
        if step_mode not in STEP_MODES:
            raise EnvError(f"step_mode must be one of {STEP_MODES}, got {step_mode!r}")
        if max_steps is None:
            max_steps = 1 if step_mode == "function" else 16
        super().__init__(tasks, max_steps=max_steps, reward_mode=reward_mode, render_mode=render_mode)
        bad = [t for t in self.tasks if not isinstance(t, Task)]
        if bad:
            raise EnvError(f"tasks must be envs.Task objects, got {type(bad[0]).__name__}")
        if not isinstance(visible_test_reward, (int, float)) or not 0.0 <= visible_test_reward <= 1.0:
            raise EnvError(f"visible_test_reward must be a number in [0, 1], got {visible_test_reward!r}")
        if sandbox is not None and not isinstance(sandbox, (SandboxConfig, Sandbox)):
            raise EnvError(f"sandbox must be a SandboxConfig or a Sandbox, got {type(sandbox).__name__}")
        self.step_mode = step_mode
        self.step_delimiter = "\n" + FENCE if step_mode == "function" else "\n\n"
        self.visible_test_reward = float(visible_test_reward)
        default = SandboxConfig(timeout_s=10.0, memory_mb=1024, warm=True)  # warm: see envs/code/warm.py
        self._sandbox_spec = sandbox if sandbox is not None else default
        self._max_workers = max_workers
        self._pool: SandboxPool | None = None
        self._pool_lock = threading.Lock()
        self._verdicts: OrderedDict[tuple[str, str], bool] = OrderedDict()

    # ----- what subclasses define -----------------------------------------------------
    def code_prefix(self, task: Task) -> str:
        """Code the policy continues (after the chat): an opening fence, maybe a signature."""
        return FENCE + "python\n"

    def solution(self, answer: str, task: Task) -> str:
        """The full source of a solution, from the policy's final code."""
        return answer

    def user_prompt(self, task: Task) -> str:
        raise NotImplementedError

    # ----- the TextEnv contract -------------------------------------------------------
    def messages(self, task: Task) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system_prompt},
                {"role": "user", "content": self.user_prompt(task)}]

    def policy_prompt(self, state: EnvState, format_chat) -> str:  # type: ignore[no-untyped-def]
        return format_chat(self.messages(state.task)) + self.code_prefix(state.task) + self.trajectory(state)

    def extract_answer(self, step: str) -> str | None:
        """The final code if ``step`` ends an episode that has no earlier steps."""
        return self._final_code((), step, None)

    def answer_of(self, state: EnvState, action: str) -> str | None:
        """The final code if ``action`` from ``state`` ends the episode (see the module docstring), else None."""
        return self._final_code(state.steps, action, state.task)

    def _final_code(self, prev: tuple[str, ...], action: str, task: Task | None) -> str | None:
        if self.step_mode == "function":
            return cut_at_fence(action)
        if FENCE in action:
            return self.step_delimiter.join(prev + (action.split(FENCE, 1)[0].rstrip(),)).rstrip()
        if not action.strip():
            return self.step_delimiter.join(prev).rstrip()
        so_far = self.step_delimiter.join(prev)
        top_level = action[:1] not in (" ", "\t") and not action.lstrip().startswith(_CONTINUES)
        if prev and top_level and parses(self.solution(so_far, task) if task is not None else so_far):
            return so_far.rstrip()
        return None

    def advance(self, state: EnvState, action: str) -> Transition:
        nxt, reward, terminated, truncated, info = super().advance(state, action)
        if terminated and reward < 1.0 and self.visible_test_reward > 0:
            fraction = self.visible_pass_fraction(info["answer"], state.task)
            info["visible_pass_fraction"] = fraction
            reward = max(reward, self.visible_test_reward * fraction)
        return nxt, reward, terminated, truncated, info

    def verify(self, answer: str | None, task: Task) -> bool:
        """Whether ``answer`` passes the hidden tests of ``task``, run in the sandbox."""
        return self.verify_many([(answer, task)])[0]

    # ----- sandboxed checks -----------------------------------------------------------
    def verify_many(self, pairs: Sequence[tuple[str | None, Task]]) -> list[bool]:
        """``verify`` for many (answer, task) pairs at once, in parallel; results in order."""
        out: list[bool | None] = []
        todo: list[tuple[int, tuple[str, str], tuple[str, str]]] = []
        for i, (answer, task) in enumerate(pairs):
            if task.answer is None:
                raise EnvError(f"task {task.id!r} carries no hidden tests (answer is None): verify needs the "
                               "full task from the dataset, not the search view of an evaluation run")
            key = (task.id, answer or "")
            with self._pool_lock:
                known = self._verdicts.get(key)
            if answer is None or not answer.strip():
                out.append(False)
            elif known is not None:
                out.append(known)
            else:
                out.append(None)
                todo.append((i, key, self.program(answer, task, task.answer)))
        if todo:
            results = self.run_programs([p for _, _, p in todo])
            for (i, key, _), result in zip(todo, results):
                out[i] = result.passed
                self._remember(key, result.passed)
        return [bool(v) for v in out]

    def visible_pass_fraction(self, answer: str | None, task: Task) -> float:
        """Fraction of ``task``'s visible tests that ``answer`` passes (each run on its own)."""
        tests = list(task.meta.get("visible_tests", ()))
        if not tests or answer is None or not answer.strip():
            return 0.0
        if len(tests) > 1:  # one run judged test by test, when the tests have the trusted shape
            joined = self.run_programs([self.program(answer, task, "\n".join(tests) + "\n")])[0]
            if joined.verdict_source is VerdictSource.TRUSTED and joined.tests_total == len(tests) and (
                    joined.passed or not any("no result" in f for f in joined.test_failures)):
                return (joined.tests_passed or 0) / len(tests)
        results = self.run_programs([self.program(answer, task, t) for t in tests])  # each in a fresh process
        return sum(r.passed for r in results) / len(tests)

    def program(self, answer: str, task: Task, tests: str) -> tuple[str, str]:
        """(solution, tests): the sandbox runs the tests after the solution, apart from it."""
        setup = str(task.meta.get("test_setup_code", ""))
        return (setup + "\n\n" if setup else "") + self.solution(answer, task) + "\n", tests

    def run_programs(self, programs: Sequence[tuple[str, str]]) -> list[SandboxResult]:
        return self.pool.run_many([p for p, _ in programs], tests=[t for _, t in programs], as_main=False)

    @property
    def pool(self) -> SandboxPool:
        """The sandbox pool, built on first use (so making an env never needs a sandbox)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = SandboxPool(self._sandbox_spec, max_workers=self._max_workers)
            return self._pool

    def _remember(self, key: tuple[str, str], verdict: bool) -> None:
        with self._pool_lock:
            self._verdicts[key] = verdict
            while len(self._verdicts) > 4096:
                self._verdicts.popitem(last=False)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        super().close()

"""What every math env shares: the step-by-step prompt and a configurable step delimiter."""

from __future__ import annotations

from typing import Sequence

from mcts_agent.envs.base import RewardMode, Task, TextEnv
from mcts_agent.errors import EnvError

# A one-shot example shown as a previous chat turn: tiny instruct models (SmolLM2-135M)
# copy the format of a worked example far more reliably than they follow instructions.
EXAMPLE_QUESTION = "A pen costs $3. Sam buys 4 pens and pays with a $20 bill. How much change does he get?"
EXAMPLE_STEPS = ("4 pens cost 4 * 3 = 12 dollars.", "His change is 20 - 12 = 8 dollars.", "The answer is 8.")


class MathEnv(TextEnv):
    """A step-by-step math env: one short step per action, a final "The answer is N." step.

    Args:
        tasks: the problems ``reset`` draws from (or pass ``options={"task": ...}``).
        step_delimiter: what ends each step in the policy's text (the policy's stop string).
        few_shot: show one worked example as a previous chat turn.
        max_steps: step budget; spending it truncates the episode.
        reward_mode: ``"none"`` (evaluation, gold hidden) or ``"outcome"`` (training).
    """

    answer_format = "The answer is N."
    example_question = EXAMPLE_QUESTION
    example_steps: tuple[str, ...] = EXAMPLE_STEPS

    def __init__(self, tasks: Sequence[Task] = (), *, step_delimiter: str = "\n", few_shot: bool = True,
                 max_steps: int = 8, reward_mode: RewardMode | str = RewardMode.NONE,
                 render_mode: str | None = None) -> None:
        super().__init__(tasks, max_steps=max_steps, reward_mode=reward_mode, render_mode=render_mode)
        if not isinstance(step_delimiter, str) or not step_delimiter:
            raise EnvError(f"step_delimiter must be a non-empty string, got {step_delimiter!r}")
        bad = [t for t in self.tasks if not isinstance(t, Task)]
        if bad:
            raise EnvError(f"tasks must be envs.Task objects, got {type(bad[0]).__name__}")
        self.step_delimiter = step_delimiter
        self.few_shot = few_shot

    def system_prompt(self) -> str:
        per = "per line" if self.step_delimiter == "\n" else f"at a time, ending each step with {self.step_delimiter!r}"
        return (f"Solve the problem step by step. Write one short step {per}. "
                f"The last step must be: {self.answer_format}")

    def messages(self, task: Task) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system_prompt()}]
        if self.few_shot:
            msgs += [{"role": "user", "content": self.example_question},
                     {"role": "assistant", "content": self.step_delimiter.join(self.example_steps)}]
        msgs.append({"role": "user", "content": task.question})
        return msgs

"""Any reasoning-gym generator as an env, verified by that dataset's own ``score_answer``.

Tasks carry only how to regenerate their entry (dataset name, seed, size, config, index),
never reasoning-gym's metadata, which often holds the solution.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Mapping, Sequence

from mcts_agent.envs.base import RewardMode, Task
from mcts_agent.envs.math.answers import answer_value, find_final, normalize_numeric
from mcts_agent.envs.math.common import MathEnv
from mcts_agent.errors import EnvError

# One-step arithmetic that SmolLM2-135M can sometimes solve: two terms of 1-2 digits.
# (Not allow_parentheses=False: reasoning-gym 0.1.25's simple generator writes "a / b" with
# a gold of a * c when no exact divisor exists.)
ARITHMETIC_CONFIG: Mapping[str, Any] = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def dataset_names() -> list[str]:
    """Every generator name reasoning-gym knows."""
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def make_dataset(name: str, size: int, seed: int, config: Mapping[str, Any]) -> Any:
    """``reasoning_gym.create_dataset`` with clear errors for bad names and configs."""
    return _cached_dataset(name, size, seed, json.dumps(dict(config), sort_keys=True, default=list))


@functools.lru_cache(maxsize=32)
def _cached_dataset(name: str, size: int, seed: int, config_json: str) -> Any:
    import reasoning_gym

    names = dataset_names()
    if name not in names:
        raise EnvError(f"unknown reasoning-gym dataset {name!r}; expected one of: {', '.join(names)}")
    config = json.loads(config_json)
    try:
        return reasoning_gym.create_dataset(name, size=size, seed=seed, **config)
    except (TypeError, ValueError, AssertionError) as e:
        raise EnvError(f"bad config {config} for reasoning-gym dataset {name!r}: {e}") from None


def load_reasoning_gym(path: str | None = None, split: str = "test", limit: int | None = None,
                       seed: int | None = None, *, dataset: str | None = None, size: int | None = None,
                       **config: Any) -> list[Task]:
    """Generate tasks. ``path`` (or ``dataset``) names the generator; ``limit`` (or ``size``)
    is how many; ``seed`` picks them (default 0). ``split`` is ignored: use another seed.

    ``basic_arithmetic`` (the default) starts from ``ARITHMETIC_CONFIG``, not reasoning-gym's
    harder defaults; pass e.g. ``max_terms=6`` to change it."""
    name = dataset or (os.fspath(path) if path is not None else "basic_arithmetic")
    if name == "basic_arithmetic":
        config = {**ARITHMETIC_CONFIG, **config}
    n = size if size is not None else limit if limit is not None else 100
    if not isinstance(n, int) or n < 1:
        raise EnvError(f"size must be a positive integer, got {n!r}")
    seed = 0 if seed is None else seed
    ds = make_dataset(name, n, seed, config)
    meta = {"dataset": name, "seed": seed, "size": n, "config": dict(config)}
    return [Task(id=f"{name}-{seed}-{i}", question=entry["question"], answer=_as_text(entry.get("answer")),
                 meta={**meta, "index": i})
            for i, entry in enumerate(ds)][:limit]


def load_arithmetic(path: str | None = None, split: str = "test", limit: int | None = None,
                    seed: int | None = None, **config: Any) -> list[Task]:
    """Small ``basic_arithmetic`` tasks (``ARITHMETIC_CONFIG``, overridable by keyword)."""
    if path not in (None, "basic_arithmetic") or config.get("dataset", "basic_arithmetic") != "basic_arithmetic":
        raise EnvError(f"math/arithmetic always uses reasoning-gym 'basic_arithmetic', "
                       f"got {config.get('dataset', path)!r}; use math/reasoning-gym for other generators")
    config.pop("dataset", None)
    return load_reasoning_gym(None, split, limit, seed, dataset="basic_arithmetic", **config)


class ReasoningGymEnv(MathEnv):
    """Tasks from reasoning-gym generator ``dataset``; answers scored by its ``score_answer``.

    Without ``tasks``, ``size`` tasks are generated with ``seed``; extra keyword arguments
    are the generator's config (e.g. ``min_terms=2``). An answer is correct when its score
    is at least ``threshold``.
    """

    example_question = "Calculate 12 + 7."
    example_steps = ("12 + 7 = 19.", "The answer is 19.")

    def __init__(self, tasks: Sequence[Task] | None = None, *, dataset: str = "basic_arithmetic", size: int = 100,
                 seed: int = 0, threshold: float = 1.0, step_delimiter: str = "\n", few_shot: bool = True,
                 max_steps: int = 4, reward_mode: RewardMode | str = RewardMode.NONE,
                 render_mode: str | None = None, **config: Any) -> None:
        if not 0 < threshold <= 1:
            raise EnvError(f"threshold must be in (0, 1], got {threshold!r}")
        if tasks is None:
            tasks = load_reasoning_gym(dataset=dataset, size=size, seed=seed, **config)
        elif config:
            raise EnvError(f"generator config {sorted(config)} has no effect when tasks are given")
        super().__init__(tasks, step_delimiter=step_delimiter, few_shot=few_shot, max_steps=max_steps,
                         reward_mode=reward_mode, render_mode=render_mode)
        self.threshold = threshold

    def extract_answer(self, step: str) -> str | None:
        text = find_final(step)
        number = normalize_numeric(text, plain=True)  # "$1,000" -> "1000": reasoning-gym compares strings
        return number if number is not None else text

    def score(self, answer: str | None, task: Task) -> float:
        """reasoning-gym's score for ``answer`` (0 to 1); 0 when the task's gold is hidden.

        When the gold is a plain number, the answer is first read by ``normalize_numeric``
        (as in GSM8K: "19 apples" -> "19"; an ambiguous "19 or 20" scores 0); other golds
        (words, lists, expressions) are scored on the answer text as given.
        """
        if task.answer is None or answer is None:
            return 0.0
        if normalize_numeric(task.answer, plain=True) is not None:
            answer = answer_value(answer)
            if answer is None:
                return 0.0
        dataset, entry = self._entry(task)
        try:
            return float(dataset.score_answer(answer, entry))
        except Exception:  # noqa: BLE001 - some scorers choke on odd model text
            return 0.0

    def verify(self, answer: str | None, task: Task) -> bool:
        return self.score(answer, task) >= self.threshold

    def _entry(self, task: Task) -> tuple[Any, dict[str, Any]]:
        """The reasoning-gym dataset and entry ``task`` was generated from."""
        try:
            m = task.meta
            dataset = make_dataset(m["dataset"], m["size"], m["seed"], m["config"])
            entry = dataset[m["index"]]
        except (KeyError, TypeError, IndexError) as e:
            raise EnvError(f"task {task.id!r} lacks reasoning-gym meta (dataset, size, seed, config, index): "
                           f"{e!r}") from None
        if entry["question"] != task.question:
            raise EnvError(f"task {task.id!r} does not match reasoning-gym's {task.meta['dataset']!r} entry "
                           f"{task.meta['index']}; was it made with another reasoning-gym version?")
        return dataset, entry


class ArithmeticEnv(ReasoningGymEnv):
    """One-step arithmetic ("Calculate 12 + 7.") for tiny models: ``basic_arithmetic`` with
    ``ARITHMETIC_CONFIG``; any of its fields can be overridden by keyword."""

    def __init__(self, tasks: Sequence[Task] | None = None, **kwargs: Any) -> None:
        if kwargs.get("dataset", "basic_arithmetic") != "basic_arithmetic":
            raise EnvError(f"math/arithmetic always uses reasoning-gym 'basic_arithmetic', got "
                           f"{kwargs['dataset']!r}; use math/reasoning-gym for other generators")
        super().__init__(tasks, **kwargs)


def _as_text(answer: Any) -> str:
    """Gold as text; "" for generators without one oracle answer (their scorer checks validity)."""
    return "" if answer is None else answer if isinstance(answer, str) else json.dumps(answer)

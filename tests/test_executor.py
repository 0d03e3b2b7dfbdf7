"""Env-step executors: order, concurrency (proven with a barrier, not timings), deadlines, errors."""

from __future__ import annotations

import threading
import time

import pytest

from mcts_agent.errors import ConfigError
from mcts_agent.executor import SKIPPED, ProcessExecutor, SerialExecutor, ThreadExecutor, make_executor


def square(env: object, x: int) -> int:
    return x * x + (env or 0)  # type: ignore[operator]


def fail_on_three(env: object, x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


@pytest.mark.parametrize("executor", [SerialExecutor(), ThreadExecutor(3), ProcessExecutor(2)],
                         ids=["serial", "thread", "process"])
def test_results_in_input_order(executor) -> None:
    with executor:
        assert executor.map(square, 10, list(range(7))) == [x * x + 10 for x in range(7)]


def test_threads_really_overlap() -> None:
    barrier = threading.Barrier(4, timeout=10)

    def meet(env: object, x: int) -> int:
        barrier.wait()  # raises BrokenBarrierError unless 4 steps are in flight at once
        return x

    with ThreadExecutor(4) as ex:
        assert ex.map(meet, None, [1, 2, 3, 4]) == [1, 2, 3, 4]


def test_items_past_their_deadline_are_skipped() -> None:
    past, future = time.perf_counter() - 1, time.perf_counter() + 60
    for ex in (SerialExecutor(), ThreadExecutor(2)):
        assert ex.map(square, 0, [1, 2, 3], [past, future, None]) == [SKIPPED, 4, 9]
        ex.close()


@pytest.mark.parametrize("executor", [SerialExecutor(), ThreadExecutor(2), ProcessExecutor(2)],
                         ids=["serial", "thread", "process"])
def test_a_failing_step_propagates(executor) -> None:
    with executor, pytest.raises(ValueError, match="three"):
        executor.map(fail_on_three, None, [1, 2, 3, 4])


def test_make_executor_validates() -> None:
    assert isinstance(make_executor("thread", 1), SerialExecutor)
    assert isinstance(make_executor("thread", 4), ThreadExecutor)
    with pytest.raises(ConfigError, match="unknown env executor 'dask'; expected one of"):
        make_executor("dask", 2)
    with pytest.raises(ConfigError, match="env executor workers must be an int >= 1, got 0"):
        make_executor("thread", 0)

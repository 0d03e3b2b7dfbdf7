"""Branching by replay: a pool of live env instances keyed by the actions they have taken.

Some worlds cannot be copied (a browser, a JVM): to go back to a node, reset an instance
with the task's seed and replay the node's action prefix. ``ReplayPool`` keeps up to
``capacity`` live instances and hands out the one whose history is the longest prefix of
what is asked, so most steps replay nothing: expanding a child right after its parent
finds the parent's instance one action short. Instances are used by one thread at a time;
``close`` (or leaving the ``with`` block) closes every instance.

The three callables define the world: ``create() -> instance``, ``reset(instance, task_key)``
(reset to the task's start, same seed every time) and ``step(instance, action) -> result``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Hashable, TypeVar

from mcts_agent.errors import ConfigError

I = TypeVar("I")


@dataclass
class _Slot(Generic[I]):
    instance: I
    task: Hashable = None
    history: tuple[str, ...] = ()
    busy: bool = False
    last_used: int = 0


@dataclass
class ReplayStats:
    steps: int = 0  # actions asked for
    replayed: int = 0  # actions replayed to reach a prefix
    resets: int = 0
    created: int = 0
    reuse: dict[str, int] = field(default_factory=lambda: {"exact": 0, "prefix": 0, "fresh": 0})


class ReplayPool(Generic[I]):
    """Live instances that reach any action prefix of a task by reset + replay."""

    def __init__(self, create: Callable[[], I], reset: Callable[[I, Hashable], Any], step: Callable[[I, str], Any],
                 *, capacity: int = 4, close: Callable[[I], Any] | None = None) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"ReplayPool capacity must be an int >= 1, got {capacity!r}")
        self._create, self._reset, self._step, self._close = create, reset, step, close
        self.capacity = capacity
        self.stats = ReplayStats()
        self._slots: list[_Slot[I]] = []
        self._cond = threading.Condition()
        self._clock = 0

    def step(self, task: Hashable, prefix: tuple[str, ...], action: str) -> Any:
        """The result of ``action`` taken after ``prefix`` in ``task`` (replaying as needed)."""
        slot = self._acquire(task, tuple(prefix))
        try:
            if slot.task != task or slot.history != prefix[:len(slot.history)]:
                self._reset(slot.instance, task)
                slot.task, slot.history = task, ()
                self.stats.resets += 1
            for a in prefix[len(slot.history):]:
                self._step(slot.instance, a)
                self.stats.replayed += 1
            slot.history = tuple(prefix)
            result = self._step(slot.instance, action)
            slot.history = tuple(prefix) + (action,)
            return result
        except BaseException:
            slot.task, slot.history = None, ()  # unknown state: reset before the next use
            raise
        finally:
            with self._cond:
                slot.busy = False
                self._cond.notify()

    def _acquire(self, task: Hashable, prefix: tuple[str, ...]) -> _Slot[I]:
        with self._cond:
            self.stats.steps += 1
            while True:
                idle = [s for s in self._slots if not s.busy]
                usable = [s for s in idle if s.task == task and s.history == prefix[:len(s.history)]]
                if usable:
                    slot = max(usable, key=lambda s: len(s.history))
                    self.stats.reuse["exact" if slot.history == prefix else "prefix"] += 1
                    break
                if len(self._slots) < self.capacity:
                    slot = _Slot(self._create())
                    self._slots.append(slot)
                    self.stats.created += 1
                    self.stats.reuse["fresh"] += 1
                    break
                if idle:
                    slot = min(idle, key=lambda s: s.last_used)  # least recently used
                    self.stats.reuse["fresh"] += 1
                    break
                self._cond.wait()
            self._clock += 1
            slot.busy, slot.last_used = True, self._clock
            return slot

    def close(self) -> None:
        with self._cond:
            slots, self._slots = self._slots, []
        if self._close is not None:
            for s in slots:
                self._close(s.instance)

    def __enter__(self) -> "ReplayPool[I]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

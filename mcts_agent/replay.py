"""Branching by replay: a pool of live env instances keyed by the actions they have taken.

Some worlds cannot be copied (a browser, a JVM): to go back to a node, reset an instance
with the task's seed and replay the node's action prefix. ``ReplayPool`` keeps up to
``capacity`` live instances and hands out the one whose history is the longest prefix of
what is asked, so most steps replay nothing: expanding a child right after its parent
finds the parent's instance one action short. Instances are used by one thread at a time;
``close`` (or leaving the ``with`` block) closes every instance.

The three callables define the world: ``create() -> instance``, ``reset(instance, task_key)``
(reset to the task's start, same seed every time) and ``step(instance, action) -> result``.

Checked replay: with ``fingerprint(result) -> Hashable`` (e.g. a DOM hash of what ``reset`` and
``step`` return), ``step(..., expect=prints)`` compares what the instance shows along the prefix
(``prints[0]`` after the reset, ``prints[i + 1]`` after ``prefix[i]``) with what the tree recorded
and raises ``ReplayMismatch`` where they differ: the node is stale (the world is not deterministic).
``start(task_key)`` resets an instance and returns what the reset returned (a task's first view);
``use(fn)`` lends an idle instance for other work (reading a task's metadata) and drops its replay state.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Hashable, Sequence, TypeVar

from mcts_agent.errors import ConfigError, EnvError

I = TypeVar("I")
R = TypeVar("R")


@dataclass
class _Slot(Generic[I]):
    instance: I
    task: Hashable = None
    history: tuple[str, ...] = ()
    busy: bool = False
    last_used: int = 0
    prints: list[Hashable] = field(default_factory=list)  # fingerprint after the reset and each action


@dataclass
class ReplayStats:
    steps: int = 0  # actions asked for
    replayed: int = 0  # actions replayed to reach a prefix
    resets: int = 0
    created: int = 0
    reuse: dict[str, int] = field(default_factory=lambda: {"exact": 0, "prefix": 0, "fresh": 0})
    mismatches: int = 0  # checked replays that found a different world


class ReplayMismatch(EnvError):
    """A replayed instance shows something else than was recorded at ``index`` (0: after the reset)."""

    def __init__(self, index: int, expected: Hashable, got: Hashable) -> None:
        super().__init__(f"replay diverged at step {index}: recorded {expected!r}, replay shows {got!r}")
        self.index, self.expected, self.got = index, expected, got


class ReplayPool(Generic[I]):
    """Live instances that reach any action prefix of a task by reset + replay."""

    def __init__(self, create: Callable[[], I], reset: Callable[[I, Hashable], Any], step: Callable[[I, str], Any],
                 *, capacity: int = 4, close: Callable[[I], Any] | None = None,
                 fingerprint: Callable[[Any], Hashable] | None = None) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"ReplayPool capacity must be an int >= 1, got {capacity!r}")
        self._create, self._reset, self._step, self._close = create, reset, step, close
        self._fingerprint = fingerprint
        self.capacity = capacity
        self.stats = ReplayStats()
        self._slots: list[_Slot[I]] = []
        self._cond = threading.Condition()
        self._clock = 0

    def step(self, task: Hashable, prefix: tuple[str, ...], action: str,
             *, expect: Sequence[Hashable] | None = None) -> Any:
        """The result of ``action`` taken after ``prefix`` in ``task`` (replaying as needed).

        ``expect``: recorded fingerprints along ``prefix`` (see the module docstring), checked
        where given; ``ReplayMismatch`` if the world differs (needs ``fingerprint``)."""
        prefix = tuple(prefix)
        if expect is not None and self._fingerprint is None:
            raise ConfigError("ReplayPool.step(expect=...) needs a pool built with fingerprint=")
        slot = self._acquire(task, prefix)
        try:
            if slot.task != task or slot.history != prefix[:len(slot.history)]:
                slot.task, slot.history, slot.prints = None, (), []
                self._record(slot, 0, self._reset(slot.instance, task), expect)
                slot.task = task
                self.stats.resets += 1
            else:
                for i, got in enumerate(slot.prints):
                    self._check(i, got, expect)
            for a in prefix[len(slot.history):]:
                self._record(slot, len(slot.history) + 1, self._step(slot.instance, a), expect)
                slot.history += (a,)
                self.stats.replayed += 1
            result = self._step(slot.instance, action)
            slot.history = prefix + (action,)
            if self._fingerprint is not None:
                slot.prints.append(self._fingerprint(result))
            return result
        except BaseException:
            slot.task, slot.history, slot.prints = None, (), []  # unknown state: reset before the next use
            raise
        finally:
            self._release(slot)

    def start(self, task: Hashable) -> Any:
        """Reset an instance to ``task``'s start and return what the reset returned."""
        slot = self._acquire(task, ())
        try:
            slot.task, slot.history, slot.prints = None, (), []
            result = self._reset(slot.instance, task)
            self.stats.resets += 1
            slot.task = task
            if self._fingerprint is not None:
                slot.prints.append(self._fingerprint(result))
            return result
        except BaseException:
            slot.task, slot.history, slot.prints = None, (), []
            raise
        finally:
            self._release(slot)

    def use(self, fn: Callable[[I], R]) -> R:
        """``fn(instance)`` on an idle instance, for work besides replay (reading a task's metadata); the
        instance's replay state is dropped, so its next ``step`` resets it. Not counted in ``stats.steps``."""
        with self._cond:
            while True:
                idle = [s for s in self._slots if not s.busy]
                if idle:
                    slot = min(idle, key=lambda s: (s.task is not None, s.last_used))  # a blank one, else the LRU one
                    break
                if len(self._slots) < self.capacity:
                    slot = _Slot(self._create())
                    self._slots.append(slot)
                    self.stats.created += 1
                    break
                self._cond.wait()
            self._clock += 1
            slot.busy, slot.last_used = True, self._clock
        try:
            slot.task, slot.history, slot.prints = None, (), []
            return fn(slot.instance)
        finally:
            self._release(slot)

    def _record(self, slot: _Slot[I], index: int, result: Any, expect: Sequence[Hashable] | None) -> None:
        if self._fingerprint is None:
            return
        got = self._fingerprint(result)
        slot.prints.append(got)
        self._check(index, got, expect)

    def _check(self, index: int, got: Hashable, expect: Sequence[Hashable] | None) -> None:
        if expect is not None and index < len(expect) and expect[index] != got:
            self.stats.mismatches += 1
            raise ReplayMismatch(index, expect[index], got)

    def _release(self, slot: _Slot[I]) -> None:
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

"""The table of environments: short names for ``mcts_agent.envs.make``, ids for ``gymnasium.make``.

To add an env, append an ``EnvEntry`` to ``ENVS`` below (or call ``register_env`` from
your own code). Entry points are "module:attr" strings, so nothing heavy is imported
until an env is made.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import gymnasium

from mcts_agent.envs.base import Task, TextEnv
from mcts_agent.errors import EnvError

NAMESPACE = "mcts_agent"


@dataclass(frozen=True)
class EnvEntry:
    """One registered environment.

    Attributes:
        name: the short name ``mcts_agent.envs.make`` takes, e.g. "math/gsm8k".
        entry_point: "module:Class" of the ``TextEnv`` subclass (or the class itself).
        gym_id: the ``gymnasium.make`` id, e.g. "mcts_agent/gsm8k-v0".
        loader: "module:function" with signature ``(path, split=, limit=, seed=, **kw) -> list[Task]``
            used by ``load_tasks`` (the CLI's ``--data``); None if the env makes its own tasks.
        kwargs: default constructor kwargs.
        loader_kwargs: extra kwargs for ``loader`` (e.g. the benchmark category an entry stands for).
        test_kwargs: constructor kwargs that make a ready-to-reset env for the ``check_env`` test
            over every entry (e.g. a couple of tasks): a dict, or a "module:attr" naming a dict or a
            zero-argument function returning one (so the table imports nothing heavy).
        description: one line for ``mcts-agent envs`` listings.
    """

    name: str
    entry_point: str | Callable[..., TextEnv]
    gym_id: str
    loader: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    loader_kwargs: Mapping[str, Any] = field(default_factory=dict)
    test_kwargs: Mapping[str, Any] | str | None = None
    description: str = ""


BFCL_SINGLE_TURN = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance", "live_simple")
BFCL_MULTI_TURN = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param")


def _bfcl_entries() -> list[EnvEntry]:
    """One entry per BFCL category: ``tool/bfcl-<category>`` (its data ships in the bfcl-eval wheel)."""
    out = []
    for cat in BFCL_SINGLE_TURN + BFCL_MULTI_TURN:
        multi = cat.startswith("multi_turn")
        cls = "mcts_agent.envs.tool.bfcl_multi:BFCLMultiTurnEnv" if multi else "mcts_agent.envs.tool.bfcl:BFCLEnv"
        out.append(EnvEntry(
            f"tool/bfcl-{cat}", cls, f"{NAMESPACE}/bfcl-{cat.replace('_', '-')}-v0",
            loader="mcts_agent.envs.tool.bfcl_data:load_bfcl", kwargs={"category": cat}, loader_kwargs={"category": cat},
            test_kwargs="mcts_agent.envs.tool.bfcl_data:CHECK_KWARGS",
            description=f"BFCL {cat}: {'multi-turn calls on BFCL backends, state+response checkers' if multi else 'function calls scored by BFCL AST checker'}"))
    return out


def _miniwob_entries() -> list[EnvEntry]:
    """``web/miniwob`` (any page of the miniwob wheel: task=NAME) and ``web/miniwob-<task>`` for the featured ones."""
    from mcts_agent.envs.web.miniwob import FEATURED  # a plain module: imports no browser

    cls, loader = "mcts_agent.envs.web.miniwob:MiniWoBEnv", "mcts_agent.envs.web.miniwob:load_miniwob"
    out = [EnvEntry("web/miniwob", cls, f"{NAMESPACE}/miniwob-v0", loader=loader,
                    test_kwargs="mcts_agent.envs.web.miniwob:CHECK_KWARGS",
                    description="any MiniWoB++ page (task=NAME) in headless chromium; click/type/select/press by ref")]
    for task in FEATURED:
        out.append(EnvEntry(f"web/miniwob-{task}", cls, f"{NAMESPACE}/miniwob-{task}-v0", loader=loader,
                            kwargs={"task": task}, loader_kwargs={"task": task},
                            test_kwargs="mcts_agent.envs.web.miniwob:CHECK_KWARGS",
                            description=f"MiniWoB++ {task} in headless chromium (branching by replay)"))
    return out


def _scienceworld_entries() -> list[EnvEntry]:
    """``scienceworld`` (any of its 30 tasks: task=NAME, default all) and ``scienceworld-<task>`` for featured ones."""
    from mcts_agent.envs.text.scienceworld import FEATURED  # imports no JVM

    mod = "mcts_agent.envs.text.scienceworld"
    cls, loader = f"{mod}:ScienceWorldEnv", f"{mod}:load_scienceworld"
    out = [EnvEntry("scienceworld", cls, f"{NAMESPACE}/scienceworld-v0", loader=loader,
                    test_kwargs=f"{mod}:CHECK_KWARGS_ANY",
                    description="ScienceWorld (Agent-R): 30 science tasks (task=NAME) in its JVM simulator; its own score")]
    for task in FEATURED:
        out.append(EnvEntry(f"scienceworld-{task}", cls, f"{NAMESPACE}/scienceworld-{task}-v0", loader=loader,
                            kwargs={"task": task}, loader_kwargs={"task": task}, test_kwargs=f"{mod}:CHECK_KWARGS",
                            description=f"ScienceWorld {task} (branching by replay over live JVMs)"))
    return out


# The table. Other env families (code/, web/, tool/, swe/) append their entries here.
ENVS: list[EnvEntry] = [
    EnvEntry("math/gsm8k", "mcts_agent.envs.math.gsm8k:GSM8KEnv", f"{NAMESPACE}/gsm8k-v0",
             loader="mcts_agent.envs.math.gsm8k:load_gsm8k", test_kwargs="mcts_agent.envs.math.gsm8k:CHECK_KWARGS",
             description="GSM8K word problems; final step 'The answer is N.'"),
    EnvEntry("math/boxed", "mcts_agent.envs.math.boxed:BoxedEnv", f"{NAMESPACE}/boxed-v0",
             loader="mcts_agent.envs.math.boxed:load_boxed", test_kwargs="mcts_agent.envs.math.boxed:CHECK_KWARGS",
             description="MATH-style problems; final answer in \\boxed{...}"),
    EnvEntry("math/reasoning-gym", "mcts_agent.envs.math.reasoning_gym_env:ReasoningGymEnv", f"{NAMESPACE}/reasoning-gym-v0",
             loader="mcts_agent.envs.math.reasoning_gym_env:load_reasoning_gym", test_kwargs={"size": 4},
             description="any reasoning-gym generator (dataset=NAME), scored by its own verifier"),
    EnvEntry("math/arithmetic", "mcts_agent.envs.math.reasoning_gym_env:ArithmeticEnv", f"{NAMESPACE}/arithmetic-v0",
             loader="mcts_agent.envs.math.reasoning_gym_env:load_arithmetic", test_kwargs={"size": 4},
             description="one-step arithmetic (reasoning-gym basic_arithmetic, 2 terms, 1-2 digits)"),
    EnvEntry("code/humaneval", "mcts_agent.envs.code.humaneval:HumanEvalEnv", f"{NAMESPACE}/humaneval-v0",
             loader="mcts_agent.envs.code.humaneval:load_humaneval", test_kwargs="mcts_agent.envs.code.humaneval:check_kwargs",
             description="HumanEval function completion; hidden tests run in the sandbox"),
    EnvEntry("code/mbpp", "mcts_agent.envs.code.mbpp:MBPPEnv", f"{NAMESPACE}/mbpp-v0",
             loader="mcts_agent.envs.code.mbpp:load_mbpp", test_kwargs="mcts_agent.envs.code.mbpp:CHECK_KWARGS",
             description="MBPP short functions; first test visible, all tests hidden in the sandbox"),
    EnvEntry("demo/counter", "mcts_agent.envs.demo:CounterEnv", f"{NAMESPACE}/counter-v0",
             loader="mcts_agent.envs.demo:load_counter", test_kwargs="mcts_agent.envs.demo:CHECK_KWARGS",
             description="multi-turn toy world: add(N) to reach a target, then submit(); delay= for a slow env"),
    EnvEntry("textcraft", "mcts_agent.envs.text.textcraft:TextCraftEnv", f"{NAMESPACE}/textcraft-v0",
             loader="mcts_agent.envs.text.textcraft:load_textcraft", test_kwargs="mcts_agent.envs.text.textcraft:CHECK_KWARGS",
             description="TextCraft (Agent-R): craft a Minecraft item from a recipe list; the package's own reward"),
    EnvEntry("swe/bench", "mcts_agent.envs.swe.env:SWEEnv", f"{NAMESPACE}/swe-bench-v0",
             loader="mcts_agent.envs.swe.env:load_swe", test_kwargs="mcts_agent.envs.swe.env:check_kwargs",
             description="SWE-bench-format issues in local git checkouts; edit actions, sandboxed pytest, SWE-bench grading"),
    *_bfcl_entries(),
    *_miniwob_entries(),
    *_scienceworld_entries(),
]

_BY_NAME: dict[str, EnvEntry] = {}


def register_env(entry: EnvEntry) -> None:
    """Add ``entry`` to ``mcts_agent.envs.make`` and ``gymnasium.make`` (replacing one of the same name)."""
    if not isinstance(entry, EnvEntry):
        raise EnvError(f"register_env needs an EnvEntry, got {type(entry).__name__}")
    _BY_NAME[entry.name] = entry
    if entry not in ENVS:
        ENVS[:] = [e for e in ENVS if e.name != entry.name] + [entry]
    current = gymnasium.registry.get(entry.gym_id)
    if current is None or current.entry_point != entry.entry_point or current.kwargs != dict(entry.kwargs):
        gymnasium.register(id=entry.gym_id, entry_point=entry.entry_point, kwargs=dict(entry.kwargs))


def unregister_env(name: str) -> None:
    """Remove env ``name`` from ``mcts_agent.envs.make`` and ``gymnasium.make`` (for tests and plugins)."""
    entry = get_entry(name)
    del _BY_NAME[entry.name]
    ENVS[:] = [e for e in ENVS if e.name != entry.name]
    gymnasium.registry.pop(entry.gym_id, None)


def list_envs() -> list[str]:
    """Short names of every registered env, sorted."""
    return sorted(_BY_NAME)


def get_entry(name: str) -> EnvEntry:
    """The entry for a short name ("math/gsm8k") or gymnasium id ("mcts_agent/gsm8k-v0")."""
    if isinstance(name, str):
        if name in _BY_NAME:
            return _BY_NAME[name]
        for entry in _BY_NAME.values():
            if entry.gym_id == name:
                return entry
    hint = difflib.get_close_matches(str(name), list_envs(), n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise EnvError(f"unknown environment {name!r}{did_you_mean}; known environments: {', '.join(list_envs())}")


def make(name: str, **kwargs: Any) -> TextEnv:
    """A bare env (no Gymnasium wrappers, so ``snapshot``/``restore`` are reachable).

    ``kwargs`` go to the env's constructor on top of the entry's defaults.
    """
    entry = get_entry(name)
    merged = {**entry.kwargs, **kwargs}
    cls = _load(entry.entry_point, f"entry point of {entry.name!r}")
    try:
        inspect.signature(cls).bind(**merged)
    except TypeError as e:
        raise EnvError(f"bad arguments for environment {entry.name!r}: {e}") from None
    env = cls(**merged)
    # The spec lets check_env and users re-create the env exactly as made here.
    env.spec = dataclasses.replace(gymnasium.spec(entry.gym_id), kwargs=merged)
    return env


def load_tasks(name: str, path: str | os.PathLike[str] | None = None, *, split: str = "test",
               limit: int | None = None, seed: int | None = None, **kwargs: Any) -> list[Task]:
    """Tasks for env ``name`` from ``path`` (file, folder or ``datasets`` id), for the CLI's
    ``--env NAME --data PATH --limit N``. Generated envs (reasoning-gym) may take no path."""
    entry = get_entry(name)
    if entry.loader is None:
        raise EnvError(f"environment {entry.name!r} has no task loader; pass tasks to envs.make instead")
    loader = _load(entry.loader, f"loader of {entry.name!r}")
    return loader(path, split=split, limit=limit, seed=seed, **{**entry.loader_kwargs, **kwargs})


def check_kwargs(name: str) -> dict[str, Any]:
    """The entry's ``test_kwargs`` resolved: constructor kwargs for a ready-to-reset env."""
    entry = get_entry(name)
    value: Any = entry.test_kwargs or {}
    if isinstance(value, str):
        value = _load(value, f"test_kwargs of {entry.name!r}")
        value = value() if callable(value) else value
    return dict(value)


def _load(ref: str | Callable[..., Any], what: str) -> Any:
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise EnvError(f"cannot import {what} {ref!r}: {e}") from e


for _entry in list(ENVS):
    register_env(_entry)

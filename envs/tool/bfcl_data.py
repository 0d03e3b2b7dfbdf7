"""BFCL (Berkeley Function Calling Leaderboard) data: import isolation, categories, tasks.

Importing this module first makes every later ``bfcl_eval`` import safe:

* ``BFCL_PROJECT_ROOT`` points at a private temporary folder (removed at exit) unless the
  user set it, because bfcl-eval creates ``result/``, ``score/`` and ``.file_locks/`` there
  at import time (by default inside site-packages);
* ``bfcl_eval.constants.model_config`` is stubbed, because the real one imports every API
  SDK (openai, anthropic, ...). Only ``MODEL_CONFIG_MAPPING`` is read, by the AST checker,
  for ``underscore_to_dot``; ``register_model_name`` adds the names we score under.

A ``Task`` holds the BFCL id, the first user request, the gold as JSON (the possible answers,
the per-turn ground-truth calls, or ``IRRELEVANCE_GOLD``) and, in ``meta``, only what search
may see: category, user turns, function docs (and for multi-turn the initial world state,
the involved backend classes and the miss_func held-out docs per turn).
"""

from __future__ import annotations

import atexit
import copy
import functools
import json
import os
import shutil
import sys
import tempfile
import types
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

from mcts_agent.env import Task
from mcts_agent.envs.loading import read_records, select
from mcts_agent.envs.registry import BFCL_MULTI_TURN, BFCL_SINGLE_TURN
from mcts_agent.errors import EnvError

CATEGORIES: tuple[str, ...] = BFCL_SINGLE_TURN + BFCL_MULTI_TURN
IRRELEVANCE_GOLD = json.dumps({"expected": "no function call"})
"""The gold of an irrelevance task: there is no right call, only the right refusal."""
FC_MODEL = "mctsagent-bfcl-fc"
"""The model name single-turn verdicts are scored under (tools renamed a.b -> a_b)."""
INSTALL_HINT = ('install it with `pip install --no-deps bfcl-eval==2026.3.23` and then '
                '`pip install "mcts-agent[agents]"` (its loader, decoder, checkers and backends need only these)')
_MODEL_CONFIG = "bfcl_eval.constants.model_config"


class _ModelConfigMap(dict):
    """``MODEL_CONFIG_MAPPING`` stand-in: unknown names score like a prompting model."""

    def __missing__(self, key: str) -> SimpleNamespace:
        return SimpleNamespace(underscore_to_dot=False, is_fc_model=False, input_price=None, output_price=None)


def _isolate() -> None:
    if not os.environ.get("BFCL_PROJECT_ROOT"):
        root = tempfile.mkdtemp(prefix="mcts_agent_bfcl_")
        os.environ["BFCL_PROJECT_ROOT"] = root
        atexit.register(shutil.rmtree, root, True)
    if _MODEL_CONFIG not in sys.modules:
        stub = types.ModuleType(_MODEL_CONFIG)
        stub.MODEL_CONFIG_MAPPING = _ModelConfigMap()  # type: ignore[attr-defined]
        sys.modules[_MODEL_CONFIG] = stub


def register_model_name(name: str, underscore_to_dot: bool) -> None:
    """Make the AST checker score ``name`` with ``underscore_to_dot`` (it looks names up with _ -> /)."""
    mapping = sys.modules[_MODEL_CONFIG].MODEL_CONFIG_MAPPING  # type: ignore[attr-defined]
    mapping[name.replace("_", "/")] = SimpleNamespace(underscore_to_dot=underscore_to_dot, is_fc_model=True,
                                                      input_price=None, output_price=None)


def unregister_model_name(name: str) -> None:
    sys.modules[_MODEL_CONFIG].MODEL_CONFIG_MAPPING.pop(name.replace("_", "/"), None)  # type: ignore[attr-defined]


_isolate()
register_model_name(FC_MODEL, underscore_to_dot=True)


def require_bfcl() -> Any:
    """The ``bfcl_eval.utils`` module, or a clear error saying how to install bfcl-eval."""
    try:
        from bfcl_eval import utils
    except ImportError as e:
        raise EnvError(f"the BFCL environments need bfcl-eval ({e}); {INSTALL_HINT}") from e
    return utils


def check_category(category: Any, allowed: Sequence[str] = CATEGORIES) -> str:
    """``category`` if it is a supported BFCL category, else an error naming the supported ones."""
    if category not in allowed:
        raise EnvError(f"unsupported BFCL category {category!r}; supported: {', '.join(allowed)}")
    return str(category)


def is_multi_turn(category: str) -> bool:
    return category in BFCL_MULTI_TURN


# ----- loading ------------------------------------------------------------------------------
@functools.cache
def _wheel_entries(category: str) -> tuple[tuple[dict[str, Any], Any], ...]:
    """(entry, gold) pairs exactly as BFCL's evaluator loads them (no language hint)."""
    utils = require_bfcl()
    entries = utils.load_dataset_entry(category, include_prereq=False, include_language_specific_hint=False)
    if utils.is_relevance_or_irrelevance(category):
        return tuple((e, None) for e in entries)
    answers = utils.load_ground_truth_entry(category)
    if len(answers) != len(entries):
        raise EnvError(f"BFCL {category}: {len(entries)} entries but {len(answers)} possible answers")
    return tuple((e, a["ground_truth"]) for e, a in zip(entries, answers))


@functools.cache
def _wheel_gold(category: str) -> dict[str, Any]:
    return {e["id"]: g for e, g in _wheel_entries(category)}


def _from_file(path: Any, split: str, category: str) -> list[tuple[dict[str, Any], Any]]:
    utils = require_bfcl()
    out = []
    for n, rec in enumerate(read_records(path, split)):
        missing = [k for k in ("id", "question") if k not in rec]
        if missing:
            raise EnvError(f"{path}, record {n}: BFCL entries need fields {missing}; got {sorted(rec)}")
        rec = copy.deepcopy(rec)
        gold = rec.pop("ground_truth", None)
        if is_multi_turn(category):
            for key in ("initial_config", "involved_classes"):
                if key not in rec:
                    raise EnvError(f"{path}, record {n} ({rec['id']}): multi-turn entries need {key!r}")
            held = rec.get("missed_function", {})
            if "function" not in rec or any(isinstance(f, str) for fs in held.values() for f in fs):
                rec = utils.populate_test_cases_with_predefined_functions([rec])[0]
        if "function" not in rec:
            raise EnvError(f"{path}, record {n} ({rec['id']}): no 'function' docs (a multi-turn id must "
                           f"contain 'multi_turn' for BFCL to add its backend docs)")
        if gold is None and category != "irrelevance":
            try:
                gold = _wheel_gold(category).get(rec["id"])
            except FileNotFoundError:
                gold = None
        out.append((rec, gold))
    return out


def to_task(entry: Mapping[str, Any], gold: Any, category: str) -> Task:
    """A BFCL entry (as the evaluator loads it) and its gold as a ``Task``; ``meta`` holds no gold."""
    turns = copy.deepcopy(entry["question"])
    first = next((m["content"] for m in (turns[0] if turns else []) if m.get("role") == "user"), "")
    meta: dict[str, Any] = {"category": category, "turns": turns, "functions": copy.deepcopy(entry["function"])}
    if is_multi_turn(category):
        meta.update(initial_config=copy.deepcopy(entry["initial_config"]),
                    involved_classes=list(entry["involved_classes"]),
                    missed_function=copy.deepcopy(dict(entry.get("missed_function", {}))))
    if category == "irrelevance":
        answer: str | None = IRRELEVANCE_GOLD
    else:
        answer = None if gold is None else json.dumps(gold, ensure_ascii=False)
    return Task(id=str(entry["id"]), question=first, answer=answer, meta=meta)


def load_bfcl(path: Any = None, split: str = "test", limit: int | None = None, seed: int | None = None,
              category: str | None = None, **_: Any) -> list[Task]:
    """BFCL tasks of ``category``: the data in the bfcl-eval wheel (``path`` None) or a BFCL-format JSONL file.

    A file's records are BFCL prompt entries (id, question, function; for multi-turn
    initial_config, involved_classes, missed_function); their gold is a record's own
    ``ground_truth`` field, else the wheel's possible answer of the same id.
    """
    category = check_category(category)
    if split not in ("test", "all"):
        raise EnvError(f"BFCL has only the 'test' split, got split={split!r}")
    pairs = list(_wheel_entries(category)) if path in (None, "") else _from_file(path, split, category)
    return [to_task(e, g, category) for _, (e, g) in select(pairs, limit, seed)]


def bfcl_entry(task: Task) -> dict[str, Any]:
    """The BFCL test entry a task stands for (what BFCL's checkers read), as fresh copies."""
    m = task.meta
    entry: dict[str, Any] = {"id": task.id, "question": copy.deepcopy(m["turns"]),
                             "function": copy.deepcopy(m["functions"])}
    if "initial_config" in m:
        entry.update(initial_config=copy.deepcopy(m["initial_config"]), involved_classes=list(m["involved_classes"]),
                     missed_function=copy.deepcopy(dict(m.get("missed_function", {}))))
    return entry


def task_category(task: Task, allowed: Sequence[str] = CATEGORIES) -> str:
    """The BFCL category a task was loaded for, checked against ``allowed``."""
    cat = task.meta.get("category") if isinstance(task.meta, Mapping) else None
    if cat is None:
        raise EnvError(f"task {task.id!r} has no meta['category']; load BFCL tasks with load_bfcl")
    return check_category(cat, allowed)


def gold_of(task: Task) -> Any:
    """The decoded gold of ``task`` (needs the task with its answer, as verifiers get it)."""
    if task.answer is None:
        raise EnvError(f"task {task.id!r} has no gold answer: verify with the original task, not the search view")
    return json.loads(task.answer)


CHECK_KWARGS: dict[str, Any] = {"limit": 2}
"""Constructor kwargs for the registry's check_env test: two tasks of the entry's own category."""

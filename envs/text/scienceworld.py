"""``scienceworld``: elementary-science tasks in ScienceWorld's text simulator (as in Agent-R), branched by replay.

The world is PyPI ``scienceworld==1.2.3`` (Apache-2.0; its Scala simulator ships as a jar and
needs Java: ``scripts/install_system_deps.sh``), one JVM per live instance
(``envs.text.scienceworld_jvm``). A task is a (task name, variation) pair of the package's 30
tasks; splits are the package's own variation splits (``get_variations_train`` / ``_dev`` /
``_test``). The prompt is the task's description and the first "look around" (the package's
own reset move).

Actions are ScienceWorld's own free-text commands (``open door to kitchen``, ``focus on
water``, ``pick up thermometer``, ...), one line per turn, stripped. Whatever the simulator
cannot parse (an empty or malformed action, an unknown object) gets its own reply ("No known
action matches that input.") and the episode goes on. ``show_valid_actions=True`` adds the
package's valid action-object combinations to each observation (slow: ~0.1-0.2 s per step,
so off by default; the fast step never computes them).

Ends: terminated when the simulator's task-completed flag is set (success) or the score goes
below zero (the package's own failure end: a wrong focus); truncated after ``max_steps``.
Reward (outcome mode, at the end only) = the package's final score 0-100 -> [0, 1] (negative
-> 0); ``verify_state`` = the simulator's own completed flag. ``payload["score"]`` holds the
running score.

Branching: ``ReplayPool`` of live JVMs keyed by action prefix, least recently used evicted.
Its size is ``max_instances`` (default: half the available memory / ~0.6 GB per JVM, at most
4: ``default_max_instances``). The payload records the hash of what the simulator showed after
the reset and after each action; a replay that sees something else raises ``ReplayMismatch``
and the node ends as stale (``payload["stale"]``). Every JVM is stopped by ``close()``, at
exit and on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from typing import Any, Callable, Sequence

from mcts_agent.env import Branching, EnvState, RewardMode, Task
from mcts_agent.envs.agent import AgentEnv, Outcome
from mcts_agent.envs.loading import select
from mcts_agent.envs.text.scienceworld_jvm import NO_MATCH, SimResult, Simulator, default_max_instances, fingerprint
from mcts_agent.errors import EnvError
from mcts_agent.lifecycle import install_signal_handlers
from mcts_agent.llm.chat import plain_chat_position
from mcts_agent.replay import ReplayMismatch, ReplayPool

SPLITS = ("test", "dev", "train")
# Tasks with a registry entry of their own (short gold paths); any of the 30 is task=NAME of "scienceworld".
FEATURED = ("find-living-thing", "use-thermometer", "boil")
MAX_VALID_CHARS = 3000  # valid actions shown (show_valid_actions) are cut here
SYSTEM = (
    "You are an agent in ScienceWorld, a text simulation of an elementary-school science lab, house and garden. "
    "Complete the task. Reply with exactly one action per turn, as a short command, e.g.:\n"
    "look around | look at OBJ | open OBJ | close OBJ | go to LOCATION | pick up OBJ | put down OBJ | "
    "move OBJ to OBJ | pour OBJ into OBJ | activate OBJ | deactivate OBJ | use OBJ on OBJ | focus on OBJ | "
    "read OBJ | eat OBJ | wait | wait1 | inventory | task\n"
    "Focus on an object only when the task says to: focusing on the wrong one ends the task."
)
_NAMES: list[str] | None = None
_SPLITS: dict[str, dict[str, list[int]]] = {}  # per task name: the package's variation splits (read once)


def task_names() -> list[str]:
    """The package's 30 task names (read from its ``tasks.json``, no JVM needed)."""
    global _NAMES
    if _NAMES is None:
        from scienceworld.constants import ID2TASK
        from scienceworld.utils import infer_task

        _NAMES = [infer_task(n) for n in ID2TASK.values()]
    return list(_NAMES)


def check_task_name(name: Any) -> str:
    """``name`` if it names a ScienceWorld task, else an ``EnvError`` with close matches."""
    names = task_names()
    if not isinstance(name, str) or name not in names:
        hint = difflib.get_close_matches(str(name), names, n=3)
        raise EnvError(f"unknown ScienceWorld task {name!r}" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                       + f"; expected one of the {len(names)} tasks, e.g. {', '.join(names[:3])}")
    return name


def _names(task: str | Sequence[str]) -> list[str]:
    names = task_names() if task == "all" else [task] if isinstance(task, str) else list(task)
    if not names:
        raise EnvError("task must name at least one ScienceWorld task (or be 'all')")
    return [check_task_name(n) for n in names]


def split_variations(sim: Simulator, name: str, split: str) -> list[int]:
    """The package's own variation indices of task ``name`` in ``split`` (test, dev or train)."""
    if split not in SPLITS:
        raise EnvError(f"ScienceWorld split must be one of {list(SPLITS)}, got {split!r}")
    if name not in _SPLITS:
        _SPLITS[name] = sim.splits(name)
    return list(_SPLITS[name][split])


def _variations(variations: int | Sequence[int]) -> int | list[int]:
    if isinstance(variations, int) and not isinstance(variations, bool):
        if variations < 1:
            raise EnvError(f"variations must be a count >= 1 or a list of ints, got {variations!r}")
        return variations
    out = list(variations)
    if not out or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in out):
        raise EnvError(f"variations must be a count >= 1 or a non-empty list of ints >= 0, got {variations!r}")
    return out


def load_scienceworld(path: Any = None, split: str = "test", limit: int | None = None, seed: int | None = None,
                      task: str | Sequence[str] = "all", variations: int | Sequence[int] = 5,
                      **kwargs: Any) -> list[Task]:
    """Tasks for the CLI (``--env scienceworld --limit N``): the first ``variations`` of ``split`` of each task
    (shuffled by ``seed``, first ``limit``). Reading a task's first view needs a JVM: one is started and closed here."""
    if path is not None:
        raise EnvError(f"ScienceWorld tasks come from the scienceworld package; got a data path {path!r}")
    env = ScienceWorldEnv(task=task, variations=variations, split=split, max_instances=1, **kwargs)
    try:
        return [env.make_task(*k) for _, k in select(env.task_keys(), limit, seed)]
    finally:
        env.close()


class ScienceWorldEnv(AgentEnv):
    """ScienceWorld tasks ``task`` (a name, a list or "all") x ``variations`` of ``split``, one JVM per live instance."""

    branching = Branching.REPLAY
    stop = ("\n",)  # an action is one line
    # Observations are "user" turns: a text world's narration, not results of tool calls.

    def __init__(self, tasks: Sequence[Task] | None = None, *, task: str | Sequence[str] = "all",
                 variations: int | Sequence[int] = 1, split: str = "test", max_instances: int | None = None,
                 max_steps: int = 50, show_valid_actions: bool = False, heap_mb: int | None = None,
                 **kwargs: Any) -> None:
        if split not in SPLITS:
            raise EnvError(f"ScienceWorld split must be one of {list(SPLITS)}, got {split!r}")
        if max_instances is None:
            max_instances = default_max_instances()
        if not isinstance(max_instances, int) or isinstance(max_instances, bool) or max_instances < 1:
            raise EnvError(f"max_instances must be an int >= 1 (live JVMs, ~0.6 GB each), got {max_instances!r}")
        names, self._variations = _names(task), _variations(variations)
        self._init = {"task": task, "variations": variations, "split": split, "max_instances": max_instances,
                      "max_steps": max_steps, "show_valid_actions": show_valid_actions, "heap_mb": heap_mb, **kwargs}
        super().__init__([], max_steps=max_steps, **kwargs)
        self.split, self.max_instances, self.show_valid_actions = split, max_instances, bool(show_valid_actions)
        sim_kwargs = {} if heap_mb is None else {"heap_mb": heap_mb}
        install_signal_handlers()  # JVMs may start in executor threads, where handlers cannot be set
        self.pool: ReplayPool[Simulator] = ReplayPool(
            lambda: Simulator(**sim_kwargs), Simulator.reset, self._step, capacity=max_instances,
            close=Simulator.close, fingerprint=fingerprint)
        self._names = names
        self._pending = tasks is None
        self._tasks = [] if tasks is None else list(tasks)

    @property
    def tasks(self) -> list[Task]:
        """The env's tasks; their first views are read (in a JVM) on first use."""
        if self._pending:
            self._tasks = [self.make_task(n, v) for n, v in self.task_keys()]
            self._pending = False
        return self._tasks

    @tasks.setter
    def tasks(self, value: list[Task]) -> None:
        self._tasks, self._pending = list(value), False

    def task_keys(self) -> list[tuple[str, int]]:
        """(task name, variation) pairs: the first ``variations`` of ``split`` per task, or the listed indices."""
        out = []
        for name in self._names:
            allowed = self.pool.use(lambda sim: split_variations(sim, name, self.split))
            if isinstance(self._variations, int):
                out += [(name, v) for v in allowed[:self._variations]]
            else:
                bad = [v for v in self._variations if v not in allowed]
                if bad:
                    raise EnvError(f"variations {bad} of {name!r} are not in its {self.split} split "
                                   f"({allowed[0]}..{allowed[-1]})")
                out += [(name, v) for v in self._variations]
        return out

    def make_task(self, name: str, variation: int) -> Task:
        """The task of ScienceWorld task ``name`` at ``variation``: its description and first look around."""
        key = (check_task_name(name), int(variation))

        def read(sim: Simulator) -> tuple[SimResult, str]:
            first = sim.reset(key)
            return self._step_result(sim, first), sim.description(key)

        first, desc = self.pool.use(read)
        question = f"{desc}\n\n{self._shown(first)}"
        return Task(id=f"scienceworld-{name}-{variation}", question=question,
                    answer="task completed", meta={"task": name, "variation": int(variation), "hash": first.hash})

    @staticmethod
    def key(task: Task) -> tuple[str, int]:
        meta = task.meta
        if not isinstance(meta.get("task"), str) or not isinstance(meta.get("variation"), int):
            raise EnvError(f"task {task.id!r} needs meta['task'] (a ScienceWorld task) and meta['variation'] (an int)")
        return meta["task"], meta["variation"]

    def gold_actions(self, task: Task) -> list[str]:
        """The package's gold action sequence for ``task`` (for scripted oracles; never shown to the policy)."""
        key = self.key(task)
        return self.pool.use(lambda sim: sim.gold_actions(key))

    def _step(self, sim: Simulator, action: str) -> SimResult:
        return self._step_result(sim, sim.step(action))

    def _step_result(self, sim: Simulator, res: SimResult) -> SimResult:
        return replace(res, valid=tuple(sim.valid_actions())) if self.show_valid_actions else res

    @staticmethod
    def _shown(res: SimResult) -> str:
        """What the policy sees of ``res``: the observation, then the valid actions where asked for (cut)."""
        if res.valid is None:
            return res.observation
        obs = res.observation + "\nValid actions: " + ", ".join(res.valid)
        return obs if len(obs) <= MAX_VALID_CHARS else obs[:MAX_VALID_CHARS] + " ..."

    # ----- AgentEnv ---------------------------------------------------------------------
    def messages(self, task: Task) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task.question}]

    def start(self, task: Task) -> tuple[Any, Any]:
        name, variation = self.key(task)
        first = task.meta.get("hash")
        return {"task": name, "variation": variation, "hashes": [first] if first else [], "score": 0,
                "completed": False, "failed": False, "stale": False}, None

    def act(self, state: EnvState, action: str) -> Outcome:
        p = state.payload
        prefix = tuple(a.strip() for a in state.steps)
        try:
            res: SimResult = self.pool.step((p["task"], p["variation"]), prefix, action.strip(), expect=p["hashes"])
        except ReplayMismatch as e:
            return Outcome(f"Error: this state cannot be reached again by replay (stale node): {e}",
                           {**p, "stale": True}, terminated=True, role="user", info={"stale": True})
        payload = {**p, "hashes": [*p["hashes"], res.hash], "score": res.score, "completed": res.completed,
                   "failed": res.failed}
        info = {"valid": res.observation != NO_MATCH, "score": res.score, "completed": res.completed}
        obs = self._shown(res)
        done = res.completed or res.failed
        if done and self.reward_mode is RewardMode.OUTCOME:  # evaluation never shows the task's verdict
            obs += f"\nTask score: {res.score}."
        reward = max(0, res.score) / 100 if done else 0.0
        return Outcome(obs, payload, reward=reward, terminated=done, answer="task completed" if res.completed else None,
                       role="user", info=info)

    def verify_state(self, state: EnvState, task: Task) -> bool:
        p = state.payload or {}
        return bool(p.get("completed")) and not p.get("stale") and (p.get("task"), p.get("variation")) == self.key(task)

    # ----- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Stop every JVM of the pool (idempotent)."""
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        """What a copy in another process (a Ray or process worker) is built from: the options and
        the tasks; its JVMs are its own, started there on first use."""
        return {"init": self._init, "tasks": None if self._pending else self._tasks, "reward_mode": self.reward_mode}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["tasks"], **state["init"])  # type: ignore[misc]
        self.reward_mode = state["reward_mode"]


def oracle_script(env: ScienceWorldEnv, tasks: Sequence[Task]) -> Callable[[str, int], str]:
    """A scripted policy for ``ScriptedBackend`` (its template-free chat) that follows the package's gold
    action sequences: the task is the one whose text is in the prompt, the next action is the gold
    path's step after the assistant turns already taken ("look around" once it is done)."""
    plans: dict[str, list[str]] = {}
    for t in tasks:
        if t.question in plans:
            raise EnvError(f"two tasks pose the same text ({t.id!r}); a text-keyed oracle cannot tell them apart")
        plans[t.question] = env.gold_actions(t)

    def script(prompt: str, i: int) -> str:
        question, _, taken = plain_chat_position(prompt, plans)
        plan = plans[question]
        return plan[taken] if taken < len(plan) else "look around"

    return script


CHECK_KWARGS = {"variations": 1, "max_instances": 1, "max_steps": 10}  # entries with a task of their own
CHECK_KWARGS_ANY = {**CHECK_KWARGS, "task": "find-living-thing"}  # "scienceworld" (default: every task)

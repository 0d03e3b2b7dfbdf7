"""Helpers shared by the training-data builders: prompts, correctness, dataset saving."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from mcts_agent.errors import TrainingDataError
from mcts_agent.tree import Node, Tree

if TYPE_CHECKING:
    import datasets

    from mcts_agent.envs.base import Task, TextEnv

PromptFn = Callable[[Tree, int], str]
"""``prompt_fn(tree, node_id)``: the text the policy saw at ``node_id`` (steps up to it, inclusive)."""

CorrectFn = Callable[[Tree, Node], "bool | None"]
"""``correct_fn(tree, node)``: whether a terminal node's answer is right; None when unknown."""


def default_prompt(tree: Tree, node_id: int, delimiter: str = "\n") -> str:
    """The question, a blank line, then every step to ``node_id`` followed by ``delimiter``.

    This is what ``TextEnv.observation`` renders, so the policy's continuation is the next step.
    """
    return tree.question + "\n\n" + "".join(step + delimiter for step in tree.steps(node_id))


def recorded_prompt(fallback: PromptFn | None = None, delimiter: str = "\n") -> PromptFn:
    """A ``prompt_fn`` that reads the prompt the policy saw back from the tree (``Tree.prompt``).

    Search records every prompt it renders, so this is exact. A node whose prompt was never
    recorded (a version-1 tree file, a hand-built tree) goes to ``fallback``, by default
    ``default_prompt`` with ``delimiter``.
    """
    def prompt_fn(tree: Tree, node_id: int) -> str:
        text = tree.prompt(node_id)
        if text is not None:
            return text
        return fallback(tree, node_id) if fallback is not None else default_prompt(tree, node_id, delimiter)

    return prompt_fn


def env_prompt_fn(env: "TextEnv", format_chat: Callable[[Sequence[dict[str, str]]], str],
                  tasks: Mapping[str, "Task"] | None = None) -> PromptFn:
    """A ``prompt_fn`` that renders prompts exactly as ``env.policy_prompt`` does during search.

    ``tasks`` maps task ids to the original tasks (for envs whose messages need ``Task.meta``);
    without it a task is rebuilt from the tree's id and question.
    """
    from mcts_agent.env import EnvState, Task, Turn

    def prompt_fn(tree: Tree, node_id: int) -> str:
        task = tasks[tree.task_id] if tasks and tree.task_id in tasks else Task(id=tree.task_id, question=tree.question)
        state = EnvState(task=task, turns=tuple(Turn(n.action, n.observation) for n in tree.path(node_id)[1:]))
        return env.policy_prompt(state, format_chat)

    return prompt_fn


def render_prompt(prompt_fn: PromptFn, tree: Tree, node_id: int) -> str:
    """Call ``prompt_fn`` and check that it returned a string."""
    text = prompt_fn(tree, node_id)
    if not isinstance(text, str):
        raise TrainingDataError(f"prompt_fn(tree {tree.tree_id!r}, node {node_id}) returned {type(text).__name__}, expected str")
    return text


def check_trees(trees: Iterable[Tree], what: str) -> list[Tree]:
    """The trees as a list; a clear error if there are none or one is not a Tree."""
    if isinstance(trees, Tree):
        raise TrainingDataError(f"{what} expects a list of trees, got a single Tree ({trees.tree_id!r}); wrap it in a list")
    out = list(trees)
    if not out:
        raise TrainingDataError(f"{what} got no trees: expected at least one mcts_agent.tree.Tree")
    for i, t in enumerate(out):
        if not isinstance(t, Tree):
            raise TrainingDataError(f"{what}: item {i} is a {type(t).__name__}, expected mcts_agent.tree.Tree")
    return out


def reward_correct(tree: Tree, node: Node, threshold: float = 1.0) -> bool | None:
    """Correctness from the environment reward: ``reward >= threshold`` at a terminal node.

    In turn-based (agent) trees a leaf cut by the step budget is a failure (False).
    Unknown (None) for other non-terminal nodes, a missing reward, or a tree not searched with
    outcome rewards (``meta["reward_mode"]``, written by the planner, is "none" in evaluation:
    every reward is then 0 whatever the answer; a tree without it says nothing either).
    """
    if tree.meta.get("reward_mode") != "outcome":
        return None
    if tree.meta.get("turn_based") and node.truncated and not node.children:
        return False  # an agent episode that ran out of budget failed
    if not node.terminal or node.reward is None:
        return None
    return node.reward >= threshold


def subtree_outcomes(tree: Tree, correct_fn: CorrectFn = reward_correct) -> list[tuple[bool, bool]]:
    """Per node: (some terminal below it, itself included, is correct; some terminal below it is known).

    One pass from the deepest nodes up (children always have larger ids than their parent).
    """
    good = [False] * len(tree.nodes)
    known = [False] * len(tree.nodes)
    for node in reversed(tree.nodes):
        c = correct_fn(tree, node)
        if c is not None:
            known[node.id] = True
            good[node.id] = good[node.id] or c
        if node.parent is not None:
            good[node.parent] = good[node.parent] or good[node.id]
            known[node.parent] = known[node.parent] or known[node.id]
    return list(zip(good, known))


def records_to_dataset(records: list[dict[str, Any]], what: str) -> "datasets.Dataset":
    """A ``datasets.Dataset`` from a non-empty list of flat records."""
    import datasets

    if not records:
        raise TrainingDataError(f"no {what} to put in a dataset: expected at least one record")
    return datasets.Dataset.from_list(records)


def save_dataset(ds: "datasets.Dataset | datasets.DatasetDict", path: str | os.PathLike[str]) -> Path:
    """``save_to_disk`` into a temp directory beside ``path``, then swap it in (never a half-written dataset)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        ds.save_to_disk(str(tmp))
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target

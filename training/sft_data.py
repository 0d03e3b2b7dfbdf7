"""SFT-style training data from search trees.

* :func:`prm_step_labels`: one row per step with a label for a process reward model or a
  value model: the step's Q (rStar-Math), whether its subtree reached a correct answer
  (Math-Shepherd's hard estimate) or the share of the rollouts below it that did (its soft,
  Monte-Carlo estimate, OmegaPRM); :func:`prm_stepwise` gives the same labels per path in
  TRL's stepwise-supervision format, :func:`prm_path_targets` as float targets per path;
  :func:`label_stats` summarises either (label balance, per-depth counts).
* :func:`revision_trajectories`: Agent-R-style records: a failing path cut at its first bad
  step, a short revision phrase, then a sibling path that reaches a correct answer.
* :func:`rejection_sampling_sft`: correct terminal paths as prompt/completion (STaR /
  best-of-N rejection sampling baseline).

Correctness comes from ``correct_fn(tree, node)`` (default: the terminal reward, known in
training runs with outcome rewards). Every function returns a ``datasets.Dataset``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from mcts_agent.errors import ConfigError, TrainingDataError
from mcts_agent.tree import Node, Tree
from mcts_agent.training.common import (CorrectFn, PromptFn, check_trees, records_to_dataset, recorded_prompt, render_prompt,
                             reward_correct, subtree_outcomes)

if TYPE_CHECKING:
    import datasets

LABEL_MODES = ("q", "outcome", "mc")
DEFAULT_REVISION = "Wait, that step looks wrong. Let me go back and try a different way."


@dataclass
class StepLabelConfig:
    """How PRM step labels are made."""

    label: str = field(default="outcome", metadata={"help": "'q': the step's Q in [0, 1]; 'outcome': 1.0 if its subtree "
                                                            "reached a correct answer else 0.0; 'mc': the share of the terminals "
                                                            "below it (each weighted by its merged samples) that are correct "
                                                            "('outcome' and 'mc' skip steps with no known outcome below)."})
    min_visits: int = field(default=1, metadata={"help": "Skip steps visited fewer times (their Q is noise)."})
    threshold: float = field(default=0.5, metadata={"help": "prm_stepwise with label 'q' or 'mc' (and label_stats): a step is "
                                                            "good when its label >= threshold."})
    delimiter: str = field(default="\n", metadata={"help": "The env's step delimiter, appended to each step."})

    def __post_init__(self) -> None:
        if self.label not in LABEL_MODES:
            raise ConfigError(f"StepLabelConfig.label must be one of {LABEL_MODES}, got {self.label!r}")
        if not isinstance(self.min_visits, int) or self.min_visits < 0:
            raise ConfigError(f"StepLabelConfig.min_visits must be an int >= 0, got {self.min_visits!r}")
        if not math.isfinite(self.threshold):
            raise ConfigError(f"StepLabelConfig.threshold must be finite, got {self.threshold!r}")


@dataclass
class RevisionConfig:
    """How Agent-R-style revision trajectories are spliced."""

    bad_q: float = field(default=0.5, metadata={"help": "The first step on a failing path with Q below this is its first "
                                                        "bad step (the wrong final step when none is)."})
    phrase: str = field(default=DEFAULT_REVISION, metadata={"help": "Revision step written between the bad step and the good path."})
    max_per_tree: int | None = field(default=None, metadata={"help": "At most this many records per tree; None keeps all."})
    delimiter: str = field(default="\n", metadata={"help": "The env's step delimiter, appended to each step."})

    def __post_init__(self) -> None:
        if not math.isfinite(self.bad_q):
            raise ConfigError(f"RevisionConfig.bad_q must be finite, got {self.bad_q!r}")
        if not isinstance(self.phrase, str) or not self.phrase.strip():
            raise ConfigError(f"RevisionConfig.phrase must be a non-empty string, got {self.phrase!r}")
        if self.max_per_tree is not None and (not isinstance(self.max_per_tree, int) or self.max_per_tree < 1):
            raise ConfigError(f"RevisionConfig.max_per_tree must be None or an int >= 1, got {self.max_per_tree!r}")


def _continuation(steps: Iterable[str], delimiter: str) -> str:
    return "".join(s + delimiter for s in steps)


def path_continuation(tree: Tree, nodes: Sequence[Node], delimiter: str) -> str | None:
    """What the policy wrote along ``nodes``, as one completion.

    Reasoning envs: the steps, each followed by ``delimiter``. Turn-based envs: each action
    followed by the context the tree recorded after it (end of turn, the world's observation,
    the next turn's header), the last action alone (the trainer appends the end of turn);
    None if a context along the path was never recorded.
    """
    if not tree.meta.get("turn_based"):
        return _continuation([n.action for n in nodes], delimiter)
    parts = []
    for n in nodes[:-1]:
        if n.context is None or n.context_full:
            return None
        parts.append(n.action + n.context)
    return "".join(parts) + (nodes[-1].action if nodes else "")


# ----- PRM step labels -------------------------------------------------------------------------
def prm_step_labels(trees: Iterable[Tree], config: StepLabelConfig | None = None, prompt_fn: PromptFn | None = None,
                    correct_fn: CorrectFn = reward_correct) -> "datasets.Dataset":
    """One row per non-root step: prompt (state before it), completion (the step), label, and metadata."""
    cfg = config or StepLabelConfig()
    trees = check_trees(trees, "prm_step_labels")
    render = prompt_fn or recorded_prompt(delimiter=cfg.delimiter)
    rows: list[dict[str, Any]] = []
    for tree in trees:
        outcomes = subtree_outcomes(tree, correct_fn)
        labels = step_labels(tree, cfg, correct_fn, outcomes)
        for node in tree.nodes[1:]:
            if labels[node.id] is None:
                continue
            good, known = outcomes[node.id]
            rows.append({"prompt": render_prompt(render, tree, node.parent), "completion": node.action + cfg.delimiter,
                         "label": labels[node.id], "q": node.q, "visits": node.visits, "depth": node.depth,
                         "reached_correct": good if known else None, "tree_id": tree.tree_id,
                         "task_id": tree.task_id, "node_id": node.id, "question": tree.question,
                         "steps": tree.steps(node.id)})
    if not rows:
        raise TrainingDataError(_no_labels(len(trees), cfg))
    return records_to_dataset(rows, "PRM step labels")


def step_labels(tree: Tree, config: StepLabelConfig, correct_fn: CorrectFn = reward_correct,
                outcomes: list[tuple[bool, bool]] | None = None) -> list[float | None]:
    """Per node id: its label under ``config`` (see StepLabelConfig.label), None where it has none (the root too).
    ``outcomes``: the tree's ``subtree_outcomes`` when the caller has them already."""
    outcomes = outcomes or subtree_outcomes(tree, correct_fn)
    weight = [0.0] * len(tree.nodes)  # samples of known outcome below each node, and how many were correct
    right = [0.0] * len(tree.nodes)
    for node in reversed(tree.nodes):
        c = correct_fn(tree, node)
        if c is not None:
            weight[node.id] += max(1, node.merged)
            right[node.id] += max(1, node.merged) * float(c)
        if node.parent is not None:
            weight[node.parent] += weight[node.id]
            right[node.parent] += right[node.id]
    out: list[float | None] = [None] * len(tree.nodes)
    for node in tree.nodes[1:]:
        good, known = outcomes[node.id]
        if node.visits < config.min_visits or (config.label != "q" and not known):
            continue
        out[node.id] = float(node.q if config.label == "q" else good if config.label == "outcome"
                             else right[node.id] / weight[node.id])
    return out


def _no_labels(n_trees: int, cfg: StepLabelConfig) -> str:
    return (f"no step could be labelled in {n_trees} tree(s) (label={cfg.label!r}, min_visits={cfg.min_visits}): "
            "no visited steps" + ("" if cfg.label == "q" else " with a terminal of known correctness below them"))


def prm_stepwise(trees: Iterable[Tree], config: StepLabelConfig | None = None, prompt_fn: PromptFn | None = None,
                 correct_fn: CorrectFn = reward_correct) -> "datasets.Dataset":
    """One row per terminal path: prompt, completions (steps), labels (bools): TRL's stepwise-supervision format."""
    cfg = config or StepLabelConfig()
    trees = check_trees(trees, "prm_stepwise")
    render = prompt_fn or recorded_prompt(delimiter=cfg.delimiter)
    rows: list[dict[str, Any]] = []
    for tree in trees:
        outcomes = subtree_outcomes(tree, correct_fn)
        soft = step_labels(tree, StepLabelConfig(label=cfg.label, min_visits=0), correct_fn, outcomes)
        for leaf in tree.terminals():
            path = tree.path(leaf.id)[1:]
            if cfg.label == "outcome":
                if not outcomes[leaf.id][1]:
                    continue
                labels = [outcomes[n.id][0] for n in path]
            elif cfg.label == "mc":
                if not outcomes[leaf.id][1]:
                    continue
                labels = [soft[n.id] >= cfg.threshold for n in path]  # type: ignore[operator]
            else:
                labels = [n.q >= cfg.threshold for n in path]
            rows.append({"prompt": render_prompt(render, tree, 0), "completions": [n.action + cfg.delimiter for n in path],
                         "labels": labels, "tree_id": tree.tree_id, "task_id": tree.task_id, "node_id": leaf.id})
    if not rows:
        raise TrainingDataError(f"no terminal path to label in {len(trees)} tree(s) (label={cfg.label!r})")
    return records_to_dataset(rows, "PRM stepwise paths")


def prm_path_targets(trees: Iterable[Tree], config: StepLabelConfig | None = None,
                     correct_fn: CorrectFn = reward_correct) -> "datasets.Dataset":
    """One row per terminal path: question, steps, and per step its float label (None where it
    has none: fewer than min_visits visits), for a process reward model trained a path at a time."""
    cfg = config or StepLabelConfig()
    trees = check_trees(trees, "prm_path_targets")
    rows: list[dict[str, Any]] = []
    for tree in trees:
        labels = step_labels(tree, cfg, correct_fn)
        for leaf in tree.terminals():
            path = tree.path(leaf.id)[1:]
            targets = [labels[n.id] for n in path]
            if all(t is None for t in targets):
                continue
            rows.append({"question": tree.question, "steps": [n.action for n in path], "targets": targets,
                         "depths": [n.depth for n in path], "tree_id": tree.tree_id, "task_id": tree.task_id,
                         "node_id": leaf.id})
    if not rows:
        raise TrainingDataError(_no_labels(len(trees), cfg))
    return records_to_dataset(rows, "PRM path targets")


def label_stats(labels: Sequence[float | None], depths: Sequence[int], threshold: float = 0.5) -> dict[str, Any]:
    """Label balance (share >= ``threshold``, mean) overall and per depth; None labels are skipped."""
    if len(labels) != len(depths):
        raise ValueError(f"label_stats needs as many depths as labels, got {len(depths)} and {len(labels)}")
    by_depth: dict[int, list[float]] = {}
    for y, d in zip(labels, depths):
        if y is not None:
            by_depth.setdefault(int(d), []).append(float(y))

    def summary(ys: list[float]) -> dict[str, Any]:
        return {"count": len(ys), "positive_rate": sum(y >= threshold for y in ys) / len(ys), "mean": sum(ys) / len(ys)}

    every = [y for ys in by_depth.values() for y in ys]
    return {**(summary(every) if every else {"count": 0, "positive_rate": None, "mean": None}),
            "by_depth": {str(d): summary(ys) for d, ys in sorted(by_depth.items())}}


# ----- revision trajectories ---------------------------------------------------------------------
def revision_trajectories(trees: Iterable[Tree], config: RevisionConfig | None = None, prompt_fn: PromptFn | None = None,
                          correct_fn: CorrectFn = reward_correct) -> "datasets.Dataset":
    """Agent-R-style SFT records from failing paths that have a correct sibling path.

    For each wrong terminal (in node-id order): its first bad step B is the first step on
    its path with ``visits > 0`` and ``Q < bad_q`` (else the wrong final step). From B's
    parent upwards, the first ancestor A with another child whose subtree reaches a correct
    answer is the branch point; the good path descends from A through the highest-Q
    children that still reach a correct answer. Record: prompt = the prompt at B (bad step
    included, as context), completion = revision phrase + the good steps from A. One record
    per distinct bad step.
    """
    cfg = config or RevisionConfig()
    trees = check_trees(trees, "revision_trajectories")
    render = prompt_fn or recorded_prompt(delimiter=cfg.delimiter)
    rows: list[dict[str, Any]] = []
    wrong_total = 0
    for tree in trees:
        outcomes = subtree_outcomes(tree, correct_fn)
        seen: set[int] = set()
        kept = 0
        for leaf in tree.leaves():  # wrong answers, and agent episodes that ran out of budget
            if correct_fn(tree, leaf) is not False:
                continue
            wrong_total += 1
            path = tree.path(leaf.id)[1:]
            bad = next((n for n in path if n.visits > 0 and n.q < cfg.bad_q), leaf)
            if bad.id in seen or (cfg.max_per_tree is not None and kept >= cfg.max_per_tree):
                continue
            seen.add(bad.id)
            splice = _good_branch(tree, bad, outcomes, correct_fn)
            if splice is None:
                continue
            branch, good_path = splice
            good_text = path_continuation(tree, good_path, cfg.delimiter)
            if tree.meta.get("turn_based"):  # the revision opens the next assistant turn
                prompt = tree.prompt(bad.id)
                completion = None if good_text is None else cfg.phrase + "\n" + good_text
            else:
                prompt = render_prompt(render, tree, bad.id)
                completion = cfg.phrase + cfg.delimiter + good_text
            if prompt is None or completion is None:
                continue  # the policy's view at the bad step was never recorded (it was not expanded)
            rows.append({
                "prompt": prompt,
                "completion": completion,
                "tree_id": tree.tree_id, "task_id": tree.task_id, "bad_node": bad.id, "bad_depth": bad.depth,
                "bad_q": bad.q, "branch_node": branch.id, "good_node": good_path[-1].id, "good_q": good_path[0].q,
                "wrong_node": leaf.id})
            kept += 1
    if not rows:
        raise TrainingDataError(f"no revision trajectory in {len(trees)} tree(s): {wrong_total} wrong terminal(s), "
                                "none with a sibling path that reaches a correct answer")
    return records_to_dataset(rows, "revision trajectories")


def _good_branch(tree: Tree, bad: Node, outcomes: list[tuple[bool, bool]],
                 correct_fn: CorrectFn) -> tuple[Node, list[Node]] | None:
    """(branch ancestor, good path below it ending at a correct terminal), or None."""
    on_path = bad
    while on_path.parent is not None:
        branch = tree.nodes[on_path.parent]
        alts = [tree.nodes[c] for c in branch.children if c != on_path.id and outcomes[c][0]]
        if alts:
            node = max(alts, key=lambda n: (n.q, -n.id))
            path = [node]
            while correct_fn(tree, node) is not True:
                node = max((tree.nodes[c] for c in node.children if outcomes[c][0]), key=lambda n: (n.q, -n.id))
                path.append(node)
            return branch, path
        on_path = branch
    return None


# ----- rejection sampling (STaR / best-of-N) --------------------------------------------------------
def rejection_sampling_sft(trees: Iterable[Tree], prompt_fn: PromptFn | None = None, correct_fn: CorrectFn = reward_correct,
                           *, max_per_tree: int | None = None, delimiter: str = "\n") -> "datasets.Dataset":
    """Correct terminal paths as prompt (task prompt) / completion (all steps); duplicates dropped.

    Per tree the paths are ordered by terminal Q (high first), then depth (short first), then id;
    ``max_per_tree`` keeps the first ones.
    """
    if max_per_tree is not None and (not isinstance(max_per_tree, int) or max_per_tree < 1):
        raise ConfigError(f"max_per_tree must be None or an int >= 1, got {max_per_tree!r}")
    trees = check_trees(trees, "rejection_sampling_sft")
    render = prompt_fn or recorded_prompt(delimiter=delimiter)
    rows: list[dict[str, Any]] = []
    known = 0
    for tree in trees:
        verdicts = [(n, correct_fn(tree, n)) for n in tree.terminals()]
        known += sum(v is not None for _, v in verdicts)
        good = sorted((n for n, v in verdicts if v), key=lambda n: (-n.q, n.depth, n.id))
        texts: set[str] = set()
        for node in good:
            completion = path_continuation(tree, tree.path(node.id)[1:], delimiter)
            if completion is None or completion in texts:
                continue
            texts.add(completion)
            rows.append({"prompt": render_prompt(render, tree, 0), "completion": completion, "tree_id": tree.tree_id,
                         "task_id": tree.task_id, "node_id": node.id, "reward": node.reward, "q": node.q,
                         "depth": node.depth, "answer": node.answer})
            if max_per_tree is not None and len(texts) >= max_per_tree:
                break
    if not rows:
        raise TrainingDataError(f"no correct terminal path in {len(trees)} tree(s) ({known} terminal(s) of known correctness)")
    return records_to_dataset(rows, "correct paths")

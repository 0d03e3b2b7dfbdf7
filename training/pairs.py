"""Step-level preference pairs from search trees (the MCTS-DPO rule).

At every internal node the children are alternative next steps from the same state.
Among the children visited at least ``min_visits`` times, ranked by Q (``node.q``):

* chosen   = the best child (highest Q; ties go to the lower node id),
* rejected = the worst child (``rejected="worst"``) or the runner-up (``"second"``),

and a pair is kept only if ``chosen.q - rejected.q >= q_margin`` and the gap is > 0.
The prompt is what the policy saw at the parent (``prompt_fn(tree, parent_id)``: the
task prompt plus the shared prefix of steps); chosen/rejected are the two sibling
steps, each followed by the step delimiter, i.e. the continuations the policy wrote.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from mcts_agent.errors import ConfigError, TrainingDataError
from mcts_agent.tree import Node, Tree
from mcts_agent.training.common import PromptFn, check_trees, records_to_dataset, recorded_prompt, render_prompt

if TYPE_CHECKING:
    import datasets

REJECTED_RULES = ("worst", "second")


@dataclass
class PairConfig:
    """Which sibling steps become preference pairs."""

    q_margin: float = field(default=0.1, metadata={"help": "Minimum Q gap (chosen.q - rejected.q) for a pair; >= 0."})
    min_visits: int = field(default=1, metadata={"help": "Minimum visits of both siblings; children below it are not ranked."})
    rejected: str = field(default="worst", metadata={"help": "Rejected step: 'worst' (lowest Q) or 'second' (runner-up)."})
    max_pairs_per_tree: int | None = field(
        default=None, metadata={"help": "Keep at most this many pairs per tree (largest Q gaps first); None keeps all."})
    validation: float = field(
        default=0.0, metadata={"help": "Fraction of trees (hence their pairs) held out as the 'validation' split, in [0, 1)."})
    seed: int = field(default=0, metadata={"help": "Seed of the deterministic train/validation split by tree id."})
    delimiter: str = field(default="\n", metadata={"help": "The env's step delimiter, appended to chosen/rejected steps."})

    def __post_init__(self) -> None:
        if not (isinstance(self.q_margin, (int, float)) and math.isfinite(self.q_margin) and self.q_margin >= 0):
            raise ConfigError(f"PairConfig.q_margin must be a finite number >= 0, got {self.q_margin!r}")
        if not isinstance(self.min_visits, int) or self.min_visits < 1:
            raise ConfigError(f"PairConfig.min_visits must be an int >= 1 (Q of an unvisited node is meaningless), got {self.min_visits!r}")
        if self.rejected not in REJECTED_RULES:
            raise ConfigError(f"PairConfig.rejected must be one of {REJECTED_RULES}, got {self.rejected!r}")
        if self.max_pairs_per_tree is not None and (not isinstance(self.max_pairs_per_tree, int) or self.max_pairs_per_tree < 1):
            raise ConfigError(f"PairConfig.max_pairs_per_tree must be None or an int >= 1, got {self.max_pairs_per_tree!r}")
        if not 0.0 <= self.validation < 1.0:
            raise ConfigError(f"PairConfig.validation must be in [0, 1), got {self.validation!r}")

    @property
    def rule(self) -> str:
        return f"mcts_dpo/{self.rejected}"


@dataclass(frozen=True)
class PreferencePair:
    """One step-level preference: TRL's prompt/chosen/rejected plus where it came from."""

    prompt: str
    chosen: str
    rejected: str
    tree_id: str
    task_id: str
    depth: int  # depth of the two sibling steps (their parent is at depth - 1)
    parent_id: int
    chosen_id: int
    rejected_id: int
    chosen_q: float
    rejected_q: float
    chosen_visits: int
    rejected_visits: int
    rule: str
    split: str = "train"

    @property
    def q_gap(self) -> float:
        return self.chosen_q - self.rejected_q

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["q_gap"] = self.q_gap
        return d


def extract_pairs(trees: Iterable[Tree], config: PairConfig | None = None, prompt_fn: PromptFn | None = None,
                  *, stats: dict[str, Any] | None = None) -> list[PreferencePair]:
    """Preference pairs from every internal node of every tree, in tree order then node-id order.

    ``prompt_fn(tree, node_id)`` renders the policy's prompt at a node (default:
    question + blank line + steps, each followed by the delimiter). If ``stats`` is a dict,
    it is filled with :func:`pair_stats` plus counts of the sibling groups that were skipped.
    Raises :class:`TrainingDataError` when there are no trees or no pair meets the thresholds.
    """
    cfg = config or PairConfig()
    trees = check_trees(trees, "extract_pairs")
    render = prompt_fn or recorded_prompt(delimiter=cfg.delimiter)
    held_out = _validation_trees([t.tree_id for t in trees], cfg.validation, cfg.seed)
    skipped: Counter[str] = Counter()
    pairs: list[PreferencePair] = []
    for tree in trees:
        split = "validation" if tree.tree_id in held_out else "train"
        found: list[tuple[Node, Node, Node]] = []
        for parent in tree.nodes:
            if len(parent.children) < 2:
                continue
            pick = _pick(tree, parent, cfg, skipped)
            if pick is not None:
                found.append((parent, *pick))
        if cfg.max_pairs_per_tree is not None and len(found) > cfg.max_pairs_per_tree:
            skipped["over_max_pairs_per_tree"] += len(found) - cfg.max_pairs_per_tree
            keep = sorted(found, key=lambda f: (-(f[1].q - f[2].q), f[0].depth, f[0].id))[: cfg.max_pairs_per_tree]
            found = sorted(keep, key=lambda f: f[0].id)
        for parent, good, bad in found:
            pairs.append(PreferencePair(
                prompt=render_prompt(render, tree, parent.id),
                chosen=good.action + cfg.delimiter, rejected=bad.action + cfg.delimiter,
                tree_id=tree.tree_id, task_id=tree.task_id, depth=good.depth, parent_id=parent.id,
                chosen_id=good.id, rejected_id=bad.id, chosen_q=good.q, rejected_q=bad.q,
                chosen_visits=good.visits, rejected_visits=bad.visits, rule=cfg.rule, split=split))
    if stats is not None:
        stats.clear()
        stats.update(pair_stats(pairs, trees))
        stats["skipped"] = dict(sorted(skipped.items()))
    if not pairs:
        why = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(skipped.items())) or "no node has 2 or more children"
        raise TrainingDataError(
            f"no preference pair met the thresholds in {len(trees)} tree(s) (q_margin={cfg.q_margin}, "
            f"min_visits={cfg.min_visits}, rejected={cfg.rejected!r}); sibling groups skipped: {why}. "
            "Lower q_margin or min_visits, or search with more simulations.")
    return pairs


def _pick(tree: Tree, parent: Node, cfg: PairConfig, skipped: Counter[str]) -> tuple[Node, Node] | None:
    """(chosen, rejected) among ``parent``'s children, or None (the reason is counted in ``skipped``)."""
    kids = [tree.nodes[c] for c in parent.children]
    ranked = sorted((k for k in kids if k.visits >= cfg.min_visits), key=lambda k: (-k.q, k.id))
    if len(ranked) < 2:
        skipped["below_min_visits"] += 1
        return None
    good = ranked[0]
    bad = ranked[-1] if cfg.rejected == "worst" else ranked[1]
    gap = good.q - bad.q
    if gap <= 0 or gap < cfg.q_margin:
        skipped["below_q_margin"] += 1
        return None
    if good.action == bad.action:
        skipped["identical_steps"] += 1
        return None
    return good, bad


def _validation_trees(tree_ids: list[str], fraction: float, seed: int) -> set[str]:
    """A deterministic ``fraction`` of the distinct tree ids (by a seeded hash, independent of order)."""
    if fraction <= 0:
        return set()
    ids = sorted(set(tree_ids), key=lambda t: (hashlib.sha256(f"{seed}:{t}".encode()).digest(), t))
    n = round(fraction * len(ids))
    if n == 0 and len(ids) >= 2:
        n = 1
    return set(ids[:n])


def pair_stats(pairs: list[PreferencePair], trees: Iterable[Tree] | None = None) -> dict[str, Any]:
    """Pairs per tree, Q gaps (mean/min/max), depth histogram, split sizes."""
    per_tree: Counter[str] = Counter(p.tree_id for p in pairs)
    if trees is not None:
        for t in trees:
            per_tree.setdefault(t.tree_id, 0)
    gaps = [p.q_gap for p in pairs]
    counts = list(per_tree.values())
    return {
        "trees": len(per_tree),
        "pairs": len(pairs),
        "pairs_per_tree": dict(per_tree),
        "pairs_per_tree_mean": statistics.fmean(counts) if counts else 0.0,
        "trees_without_pairs": sum(1 for c in counts if c == 0),
        "q_gap": {"mean": statistics.fmean(gaps), "min": min(gaps), "max": max(gaps)} if gaps else
                 {"mean": 0.0, "min": 0.0, "max": 0.0},
        "depth_histogram": {str(d): n for d, n in sorted(Counter(p.depth for p in pairs).items())},
        "splits": dict(sorted(Counter(p.split for p in pairs).items())),
    }


def pairs_to_dataset(pairs: list[PreferencePair]) -> "datasets.Dataset":
    """Columns prompt/chosen/rejected (what TRL's DPOTrainer reads) plus the metadata columns."""
    for i, p in enumerate(pairs):
        if not isinstance(p, PreferencePair):
            raise TrainingDataError(f"pairs_to_dataset: item {i} is a {type(p).__name__}, expected PreferencePair")
    return records_to_dataset([p.to_dict() for p in pairs], "preference pairs")


def split_dataset(ds: "datasets.Dataset") -> "datasets.DatasetDict":
    """{'train', 'validation'} from a dataset with a ``split`` column (validation only when non-empty)."""
    import datasets

    if "split" not in ds.column_names:
        return datasets.DatasetDict({"train": ds})
    out = {name: ds.filter(lambda s, n=name: s == n, input_columns="split") for name in ("train", "validation")}
    if len(out["train"]) == 0:
        raise TrainingDataError("every row is in the 'validation' split: expected some 'train' rows")
    return datasets.DatasetDict({k: v for k, v in out.items() if len(v)})

"""B-STaR-style monitors of a self-improvement iteration, computed from its search trees.

* Exploration: can the policy still find correct answers? pass@k over each tree's
  terminal answers (the unbiased estimator), distinct final answers per tree, and the
  diversity of sibling steps (distinct-n, duplicate rate of merged samples).
* Exploitation: can the critic tell good from bad? ROC AUC of critic values (``node.value``
  and each ``critic_scores`` entry) separating correct from wrong terminals, and steps whose
  subtree reached a correct answer from those that did not; accuracy of the selected answer.

Correctness comes from ``correct_fn`` (default: the terminal reward; unknown in evaluation
runs). :func:`suggest_adjustments` turns the metrics into a new sampling temperature and
pair thresholds with a small documented rule.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from mcts_agent.errors import ConfigError
from mcts_agent.tree import Tree
from mcts_agent.training.common import CorrectFn, check_trees, reward_correct, subtree_outcomes


# ----- pure metrics -------------------------------------------------------------------------------
def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Probability that a random positive outscores a random negative (ties count 1/2).

    Mann-Whitney U with average ranks. None when either class is empty.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"roc_auc needs two 1-D sequences of equal length, got shapes {s.shape} and {y.shape}")
    if not np.isfinite(s).all():
        raise ValueError("roc_auc scores must be finite numbers")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over runs of ties (1-based)
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k); k is capped at n."""
    if n <= 0:
        return 0.0
    k = min(k, n)
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Unique word n-grams / all word n-grams over ``texts``; None when there are none."""
    grams = [tuple(w[i:i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.fmean(vals) if vals else None


# ----- monitors over trees ------------------------------------------------------------------------
def exploration(trees: list[Tree], ks: Sequence[int] = (1, 4, 8), correct_fn: CorrectFn = reward_correct) -> dict[str, Any]:
    """pass@k, distinct answers and sibling-step diversity."""
    per_k: dict[int, list[float]] = {k: [] for k in ks}
    distinct_answers, d1, d2, dup = [], [], [], []
    for tree in trees:
        terms = tree.terminals()
        verdicts = [correct_fn(tree, n) for n in terms]
        known = [v for v in verdicts if v is not None]
        if known or not terms:  # a tree with no answer at all failed; one with unknown answers is skipped
            for k in ks:
                per_k[k].append(pass_at_k(len(known), sum(known), k))
        distinct_answers.append(len({n.answer for n in terms if n.answer is not None}))
        for node in tree.nodes:
            if len(node.children) < 2:
                continue
            kids = [tree.nodes[c] for c in node.children]
            texts = [k.action for k in kids]
            d1.append(distinct_n(texts, 1))
            d2.append(distinct_n(texts, 2))
            dup.append(1.0 - len(kids) / max(len(kids), sum(max(1, k.merged) for k in kids)))
    return {
        "trees_with_known_outcome": len(per_k[ks[0]]) if ks else 0,
        **{f"pass@{k}": _mean(v) for k, v in per_k.items()},
        "distinct_answers_mean": _mean(distinct_answers),
        "sibling_distinct_1": _mean(d1),
        "sibling_distinct_2": _mean(d2),
        "sibling_duplicate_rate": _mean(dup),
        "sibling_groups": len(d1),
    }


def exploitation(trees: list[Tree], correct_fn: CorrectFn = reward_correct) -> dict[str, Any]:
    """AUC of critic scores on terminals and on steps; accuracy of each tree's selected answer."""
    term: dict[str, tuple[list[float], list[bool]]] = {}
    step: dict[str, tuple[list[float], list[bool]]] = {}
    selected: list[bool] = []

    def add(bucket: dict[str, tuple[list[float], list[bool]]], name: str, score: float | None, label: bool) -> None:
        if score is not None and math.isfinite(score):
            xs, ys = bucket.setdefault(name, ([], []))
            xs.append(float(score))
            ys.append(label)

    for tree in trees:
        outcomes = subtree_outcomes(tree, correct_fn)
        for node in tree.nodes[1:]:
            scores = {"value": node.value, **{f"critic:{k}": v for k, v in node.critic_scores.items()}}
            verdict = correct_fn(tree, node) if node.terminal else None
            good, known = outcomes[node.id]
            for name, score in scores.items():
                if verdict is not None:
                    add(term, name, score, verdict)
                if known:
                    add(step, name, score, good)
            if known and node.visits > 0:
                add(step, "q", node.q, good)
        if tree.answer_node is not None and 0 <= tree.answer_node < len(tree.nodes):
            v = correct_fn(tree, tree.nodes[tree.answer_node])
            if v is not None:
                selected.append(v)
    return {
        "terminal_auc": {k: roc_auc(*v) for k, v in sorted(term.items())},
        "step_auc": {k: roc_auc(*v) for k, v in sorted(step.items())},
        "terminals_scored": len(term.get("value", ([], []))[0]),
        "selected_accuracy": _mean(float(v) for v in selected),
        "selected_known": len(selected),
    }


def compute_monitors(trees: Iterable[Tree], ks: Sequence[int] = (1, 4, 8),
                     correct_fn: CorrectFn = reward_correct) -> dict[str, Any]:
    """Exploration and exploitation metrics of one iteration's trees."""
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ConfigError(f"ks must be a non-empty sequence of ints >= 1, got {ks!r}")
    trees = check_trees(trees, "compute_monitors")
    return {"trees": len(trees), "exploration": exploration(trees, ks, correct_fn),
            "exploitation": exploitation(trees, correct_fn)}


def write_monitors(metrics: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the metrics as JSON (atomically)."""
    from mcts_agent.io import atomic_write_json

    atomic_write_json(path, metrics)


def plot_monitors(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """A PNG of the monitors across iterations.

    ``history``: one :func:`compute_monitors` dict per iteration; an ``iteration`` key, if
    present, gives its x value (else its position).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not history:
        raise ValueError("plot_monitors needs at least one iteration of metrics")
    it = [h.get("iteration", i) for i, h in enumerate(history)]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ex = [h["exploration"] for h in history]
    for key in sorted({k for e in ex for k in e if k.startswith("pass@")}, key=lambda k: int(k[5:])):
        axes[0].plot(it, [_nan(e.get(key)) for e in ex], marker="o", label=key)
    axes[0].set_title("exploration: pass@k")
    for key in ("sibling_distinct_1", "sibling_distinct_2", "sibling_duplicate_rate"):
        axes[1].plot(it, [_nan(e.get(key)) for e in ex], marker="o", label=key.replace("sibling_", ""))
    axes[1].set_title("exploration: sibling step diversity")
    xp = [h["exploitation"] for h in history]
    for bucket in ("terminal_auc", "step_auc"):
        for name in sorted({k for x in xp for k in x.get(bucket, {})}):
            axes[2].plot(it, [_nan(x.get(bucket, {}).get(name)) for x in xp], marker="o", label=f"{bucket[:-4]} {name}")
    axes[2].plot(it, [_nan(x.get("selected_accuracy")) for x in xp], marker="s", label="selected accuracy")
    axes[2].set_title("exploitation: critic AUC")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


# ----- automatic adjustment -----------------------------------------------------------------------
@dataclass(frozen=True)
class AdjustRule:
    """Targets of :func:`suggest_adjustments`."""

    k: int = field(default=8, metadata={"help": "pass@k used as the exploration ceiling."})
    min_explore_gain: float = field(default=0.1, metadata={"help": "Explore more when pass@k - pass@1 falls below this."})
    max_duplicate_rate: float = field(default=0.3, metadata={"help": "Explore more when more sibling samples are duplicates."})
    min_distinct_2: float = field(default=0.5, metadata={"help": "Explore more when sibling distinct-2 falls below this."})
    low_auc: float = field(default=0.6, metadata={"help": "Critic AUC below this: trust Q less (stricter pairs)."})
    high_auc: float = field(default=0.8, metadata={"help": "Critic AUC above this: take more pairs."})
    temperature_step: float = field(default=0.1, metadata={"help": "Temperature change per adjustment."})
    temperature_range: tuple[float, float] = field(default=(0.3, 1.5), metadata={"help": "Allowed temperatures."})
    margin_factor: float = field(default=1.5, metadata={"help": "q_margin is multiplied / divided by this."})
    margin_range: tuple[float, float] = field(default=(0.02, 0.5), metadata={"help": "Allowed q_margin."})


def suggest_adjustments(metrics: dict[str, Any], temperature: float, q_margin: float, min_visits: int,
                        rule: AdjustRule = AdjustRule()) -> dict[str, Any]:
    """New temperature, q_margin and min_visits from one iteration's monitors, with reasons.

    Rule (each part independent; values clipped to the rule's ranges):
    * Exploration has collapsed when pass@k - pass@1 < ``min_explore_gain`` AND siblings
      repeat themselves (duplicate rate > ``max_duplicate_rate`` or distinct-2 <
      ``min_distinct_2``): raise the temperature by ``temperature_step``. When exploration is
      healthy (gain >= the target and no repetition) but the selected answer is right less
      often than pass@1 suggests it could be (accuracy < pass@1), sampling is too noisy:
      lower the temperature by one step.
    * The step-level critic AUC (the 'q' entry, else 'value') measures how far Q can be
      trusted: below ``low_auc`` multiply q_margin by ``margin_factor`` and require one more
      visit; above ``high_auc`` divide q_margin by it and require one visit fewer (>= 1).
    Missing metrics leave the matching value unchanged.
    """
    ex, xp = metrics.get("exploration", {}), metrics.get("exploitation", {})
    reasons: list[str] = []
    t_lo, t_hi = rule.temperature_range
    m_lo, m_hi = rule.margin_range
    new_t, new_m, new_v = temperature, q_margin, min_visits
    p1, pk = ex.get("pass@1"), ex.get(f"pass@{rule.k}")
    dup, d2 = ex.get("sibling_duplicate_rate"), ex.get("sibling_distinct_2")
    repetitive = (dup is not None and dup > rule.max_duplicate_rate) or (d2 is not None and d2 < rule.min_distinct_2)
    if p1 is not None and pk is not None:
        gain = pk - p1
        acc = xp.get("selected_accuracy")
        if gain < rule.min_explore_gain and repetitive:
            new_t = min(t_hi, temperature + rule.temperature_step)
            reasons.append(f"pass@{rule.k} - pass@1 = {gain:.3f} < {rule.min_explore_gain} and siblings repeat: raise temperature")
        elif gain >= rule.min_explore_gain and not repetitive and acc is not None and acc < p1:
            new_t = max(t_lo, temperature - rule.temperature_step)
            reasons.append(f"selected accuracy {acc:.3f} < pass@1 {p1:.3f} with diverse samples: lower temperature")
    aucs = xp.get("step_auc", {})
    auc = aucs.get("q", aucs.get("value"))
    if auc is not None:
        if auc < rule.low_auc:
            new_m, new_v = min(m_hi, q_margin * rule.margin_factor), min_visits + 1
            reasons.append(f"step AUC {auc:.3f} < {rule.low_auc}: Q is unreliable, stricter pairs")
        elif auc > rule.high_auc:
            new_m, new_v = max(m_lo, q_margin / rule.margin_factor), max(1, min_visits - 1)
            reasons.append(f"step AUC {auc:.3f} > {rule.high_auc}: Q is reliable, more pairs")
    return {"temperature": round(new_t, 6), "q_margin": round(new_m, 6), "min_visits": new_v, "reasons": reasons}

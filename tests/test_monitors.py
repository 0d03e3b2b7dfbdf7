"""B-STaR monitors (training/monitors.py) against hand-computed values."""

from __future__ import annotations

import json

import pytest

from mcts_agent.errors import ConfigError
from tests.train_golden import golden_tree
from mcts_agent.training.monitors import (AdjustRule, compute_monitors, distinct_n, pass_at_k, plot_monitors, roc_auc,
                               suggest_adjustments, write_monitors)


def test_roc_auc_hand_values() -> None:
    # positives 0.9, 0.7 vs negatives 0.8, 0.6: 0.9>0.8, 0.9>0.6, 0.7<0.8, 0.7>0.6 -> 3/4
    assert roc_auc([0.9, 0.8, 0.7, 0.6], [True, False, True, False]) == 0.75
    # a tie counts 1/2: positive 0.5 vs negatives 0.5 (tie) and 0.2 (win) -> 1.5/2
    assert roc_auc([0.5, 0.5, 0.2], [True, False, False]) == 0.75
    assert roc_auc([0.1, 0.2, 0.3], [True, True, False]) == 0.0
    assert roc_auc([1.0, 1.0, 1.0, 1.0], [True, False, True, False]) == 0.5
    assert roc_auc([0.3, 0.4], [True, True]) is None
    with pytest.raises(ValueError, match="equal length"):
        roc_auc([0.1], [True, False])


def test_pass_at_k_and_distinct_n() -> None:
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 1, 2) == 0.5  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(3, 1, 8) == 1.0  # k capped at n
    assert pass_at_k(3, 0, 2) == 0.0 and pass_at_k(0, 0, 1) == 0.0
    assert distinct_n(["a b a", "a b"], 1) == 2 / 5
    assert distinct_n(["a b a", "a b"], 2) == 2 / 3  # (a b), (b a), (a b)
    assert distinct_n(["a", "b"], 2) is None


def test_monitors_of_the_golden_tree() -> None:
    m = compute_monitors([golden_tree()], ks=(1, 2, 8))
    ex, xp = m["exploration"], m["exploitation"]
    # terminals 4 (right), 5 and 6 (wrong)
    assert ex["pass@1"] == pytest.approx(1 / 3) and ex["pass@2"] == pytest.approx(2 / 3) and ex["pass@8"] == 1.0
    assert ex["distinct_answers_mean"] == 2 and ex["trees_with_known_outcome"] == 1
    # root siblings: 12 words, 10 distinct; node 1's: 10 words, 7 distinct
    assert ex["sibling_distinct_1"] == pytest.approx((10 / 12 + 7 / 10) / 2)
    assert ex["sibling_groups"] == 2 and ex["sibling_duplicate_rate"] == 0.0
    # terminal values: right 0.9 > wrong 0.4, 0.6
    assert xp["terminal_auc"] == {"value": 1.0}
    # step values (node 3 has no known outcome): good {0.5 (n1), 0.9 (n4)} vs bad {0.3 (n2), 0.4 (n5), 0.6 (n6)} -> 5/6
    assert xp["step_auc"]["value"] == pytest.approx(5 / 6)
    # Q: good {0.75, 1.0} vs bad {0.25, 0.0, 0.25} -> 1
    assert xp["step_auc"]["q"] == 1.0
    assert xp["selected_accuracy"] == 1.0 and xp["terminals_scored"] == 3


def test_critic_scores_duplicates_and_unknown_outcomes(tmp_path) -> None:
    t = golden_tree()
    for nid, s in [(4, 0.2), (5, 0.8), (6, 0.1)]:
        t.nodes[nid].critic_scores["judge"] = s
    t.nodes[4].merged = 3  # two more samples were identical to node 4
    evaluation = golden_tree("t2")
    evaluation.meta["reward_mode"] = "none"
    m = compute_monitors([t, evaluation], ks=(1,))
    assert m["trees"] == 2 and m["exploration"]["trees_with_known_outcome"] == 1
    assert m["exploitation"]["terminal_auc"]["critic:judge"] == 0.5  # 0.2 beats 0.1, loses to 0.8
    assert m["exploration"]["sibling_duplicate_rate"] == (0 + (1 - 2 / 4) + 0 + 0) / 4  # 2 sibling groups per tree
    write_monitors(m, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == m
    with pytest.raises(ConfigError, match=r"ks must be a non-empty sequence of ints >= 1, got \(0,\)"):
        compute_monitors([t], ks=(0,))


def test_plot(tmp_path) -> None:
    history = [{"iteration": k, **compute_monitors([golden_tree()] * k)} for k in (1, 2)]
    plot_monitors(history, tmp_path / "plots" / "monitors.png")
    assert (tmp_path / "plots" / "monitors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _metrics(p1: float, pk: float, dup: float, d2: float, auc: float | None, acc: float | None = None) -> dict:
    return {"exploration": {"pass@1": p1, "pass@8": pk, "sibling_duplicate_rate": dup, "sibling_distinct_2": d2},
            "exploitation": {"step_auc": {} if auc is None else {"q": auc}, "selected_accuracy": acc}}


def test_suggest_adjustments_rule() -> None:
    # collapsed exploration (pass@8 barely above pass@1, many duplicate samples), unreliable Q
    out = suggest_adjustments(_metrics(0.5, 0.55, 0.5, 0.9, 0.55), temperature=0.7, q_margin=0.1, min_visits=1)
    assert (out["temperature"], out["q_margin"], out["min_visits"]) == (0.8, 0.15, 2)
    assert len(out["reasons"]) == 2
    # healthy exploration but the selected answer is worse than pass@1; reliable Q
    out = suggest_adjustments(_metrics(0.4, 0.8, 0.0, 0.9, 0.9, acc=0.3), temperature=0.7, q_margin=0.1, min_visits=1)
    assert (out["temperature"], out["q_margin"], out["min_visits"]) == (0.6, 0.066667, 1)  # rounded to 6 places
    # nothing to change; clipping to the ranges
    out = suggest_adjustments(_metrics(0.4, 0.8, 0.0, 0.9, 0.7, acc=0.5), temperature=0.7, q_margin=0.1, min_visits=2)
    assert out == {"temperature": 0.7, "q_margin": 0.1, "min_visits": 2, "reasons": []}
    out = suggest_adjustments(_metrics(0.5, 0.5, 0.9, 0.1, 0.1), temperature=1.5, q_margin=0.45, min_visits=1,
                              rule=AdjustRule())
    assert (out["temperature"], out["q_margin"]) == (1.5, 0.5)
    assert suggest_adjustments({}, 0.7, 0.1, 1) == {"temperature": 0.7, "q_margin": 0.1, "min_visits": 1, "reasons": []}

"""PRM labels, revision trajectories and rejection-sampling data from hand-built trees."""

from __future__ import annotations

import re

import pytest

from mcts_agent.errors import ConfigError, TrainingDataError
from tests.train_golden import golden_tree
from mcts_agent.training.common import reward_correct
from mcts_agent.training.sft_data import (DEFAULT_REVISION, RevisionConfig, StepLabelConfig, prm_step_labels, prm_stepwise,
                               rejection_sampling_sft, revision_trajectories)

Q = "What is 2+3?\n\n"
ADD, MUL = "Add 2 and 3.\n", "Multiply 2 by 3.\n"
RIGHT, WRONG, MUL_WRONG = "2+3=5. The answer is 5\n", "2+3=6. The answer is 6\n", "2*3=6. The answer is 6\n"


def test_prm_outcome_labels_skip_steps_without_known_outcome() -> None:
    ds = prm_step_labels([golden_tree()])
    rows = [(r["node_id"], r["prompt"], r["completion"], r["label"], r["reached_correct"]) for r in ds]
    assert rows == [
        (1, Q, ADD, 1.0, True),
        (2, Q, MUL, 0.0, False),
        (4, Q + ADD, RIGHT, 1.0, True),
        (5, Q + ADD, WRONG, 0.0, False),
        (6, Q + MUL, MUL_WRONG, 0.0, False),
    ]  # node 3 has no terminal below it


def test_prm_q_labels_and_min_visits() -> None:
    ds = prm_step_labels([golden_tree()], StepLabelConfig(label="q", min_visits=3))
    assert [(r["node_id"], r["label"], r["visits"], r["reached_correct"]) for r in ds] == [
        (1, 0.75, 4, True), (2, 0.25, 4, False), (6, 0.25, 4, False)]
    ds = prm_step_labels([golden_tree()], StepLabelConfig(label="q"))
    assert [r["node_id"] for r in ds] == [1, 2, 3, 4, 5, 6] and ds[2]["reached_correct"] is None


def test_prm_stepwise_matches_trl_format() -> None:
    ds = prm_stepwise([golden_tree()])
    assert ds.to_list() == [
        {"prompt": Q, "completions": [ADD, RIGHT], "labels": [True, True], "tree_id": "t1", "task_id": "task-t1", "node_id": 4},
        {"prompt": Q, "completions": [ADD, WRONG], "labels": [True, False], "tree_id": "t1", "task_id": "task-t1", "node_id": 5},
        {"prompt": Q, "completions": [MUL, MUL_WRONG], "labels": [False, False], "tree_id": "t1", "task_id": "task-t1", "node_id": 6},
    ]
    q = prm_stepwise([golden_tree()], StepLabelConfig(label="q", threshold=0.5))
    assert [r["labels"] for r in q] == [[True, True], [True, False], [False, False]]


def test_revision_trajectories_splice_at_first_bad_step() -> None:
    ds = revision_trajectories([golden_tree()])
    assert ds.to_list() == [
        # wrong answer 5: its first step has Q 0.75, the answer step Q 0: cut there, redo from node 1
        {"prompt": Q + ADD + WRONG, "completion": DEFAULT_REVISION + "\n" + RIGHT, "tree_id": "t1", "task_id": "task-t1",
         "bad_node": 5, "bad_depth": 2, "bad_q": 0.0, "branch_node": 1, "good_node": 4, "good_q": 1.0, "wrong_node": 5},
        # wrong answer 6: its first step already has Q 0.25 < 0.5: cut there, redo from the root
        {"prompt": Q + MUL, "completion": DEFAULT_REVISION + "\n" + ADD + RIGHT, "tree_id": "t1", "task_id": "task-t1",
         "bad_node": 2, "bad_depth": 1, "bad_q": 0.25, "branch_node": 0, "good_node": 4, "good_q": 0.75, "wrong_node": 6},
    ]


def test_revision_threshold_and_phrase() -> None:
    ds = revision_trajectories([golden_tree()], RevisionConfig(bad_q=0.1, phrase="Hmm, retry.", max_per_tree=1))
    # with bad_q 0.1 only node 5 (Q 0) is bad; max_per_tree keeps the first record
    assert [(r["bad_node"], r["completion"]) for r in ds] == [(5, "Hmm, retry.\n" + RIGHT)]
    ds = revision_trajectories([golden_tree()], RevisionConfig(bad_q=0.0))
    # no step has Q < 0: each wrong answer step is its own first bad step; node 6 has no sibling,
    # so its branch point moves up to the root
    assert [(r["bad_node"], r["branch_node"], r["good_node"]) for r in ds] == [(5, 1, 4), (6, 0, 4)]


def test_rejection_sampling_keeps_correct_paths_once() -> None:
    t = golden_tree()
    t.add_child(2, action="Oops, it is addition: 2+3=5. The answer is 5", visits=1, value_sum=1.0, terminal=True, reward=1.0, answer="5")
    t.add_child(1, action="2+3=5. The answer is 5", visits=1, value_sum=0.0, terminal=True, reward=1.0, answer="5")  # duplicate text
    ds = rejection_sampling_sft([t])
    assert [(r["prompt"], r["completion"], r["node_id"]) for r in ds] == [
        (Q, ADD + RIGHT, 4), (Q, MUL + "Oops, it is addition: 2+3=5. The answer is 5\n", 7)]
    assert [r["node_id"] for r in rejection_sampling_sft([t], max_per_tree=1)] == [4]


def test_partial_rewards_use_the_threshold() -> None:
    t = golden_tree()
    t.nodes[6].reward = 0.5
    assert reward_correct(t, t.nodes[6]) is False
    assert reward_correct(t, t.nodes[6], threshold=0.5) is True
    assert reward_correct(t, t.nodes[1]) is None  # not terminal


def test_unknown_correctness_and_no_correct_answer_are_clear_errors() -> None:
    evaluation = golden_tree()
    evaluation.meta["reward_mode"] = "none"  # rewards are 0 whatever the answer: correctness is unknown
    with pytest.raises(TrainingDataError, match=re.escape("no correct terminal path in 1 tree(s) (0 terminal(s) of known correctness)")):
        rejection_sampling_sft([evaluation])
    with pytest.raises(TrainingDataError, match="with a terminal of known correctness below them"):
        prm_step_labels([evaluation])
    wrong = golden_tree()
    wrong.nodes[4].reward = 0.0
    with pytest.raises(TrainingDataError, match=re.escape("3 wrong terminal(s), none with a sibling path that reaches a correct answer")):
        revision_trajectories([wrong])
    with pytest.raises(TrainingDataError, match="revision_trajectories got no trees"):
        revision_trajectories([])


@pytest.mark.parametrize("make, message", [
    (lambda: StepLabelConfig(label="soft"), "StepLabelConfig.label must be one of ('q', 'outcome', 'mc'), got 'soft'"),
    (lambda: StepLabelConfig(min_visits=-1), "StepLabelConfig.min_visits must be an int >= 0, got -1"),
    (lambda: RevisionConfig(phrase=" "), "RevisionConfig.phrase must be a non-empty string, got ' '"),
    (lambda: RevisionConfig(max_per_tree=0), "RevisionConfig.max_per_tree must be None or an int >= 1, got 0"),
    (lambda: rejection_sampling_sft([golden_tree()], max_per_tree=0), "max_per_tree must be None or an int >= 1, got 0"),
])
def test_config_errors(make, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make()

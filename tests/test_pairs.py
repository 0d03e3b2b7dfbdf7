"""Step-level preference pairs from hand-built trees (training/pairs.py)."""

from __future__ import annotations

import re

import datasets
import pytest

from mcts_agent.errors import ConfigError, TrainingDataError
from mcts_agent.tree import Tree
from tests.train_golden import arithmetic_tree, golden_tree
from mcts_agent.training.common import save_dataset
from mcts_agent.training.pairs import PairConfig, PreferencePair, extract_pairs, pair_stats, pairs_to_dataset, split_dataset

Q = "What is 2+3?\n\n"
ROOT_PAIR = dict(prompt=Q, chosen="Add 2 and 3.\n", rejected="Multiply 2 by 3.\n", tree_id="t1", task_id="task-t1",
                 depth=1, parent_id=0, chosen_id=1, rejected_id=2, chosen_q=0.75, rejected_q=0.25,
                 chosen_visits=4, rejected_visits=4, rule="mcts_dpo/worst", split="train")
STEP2_PAIR = dict(prompt=Q + "Add 2 and 3.\n", chosen="2+3=5. The answer is 5\n", rejected="2+3=6. The answer is 6\n",
                  tree_id="t1", task_id="task-t1", depth=2, parent_id=1, chosen_id=4, rejected_id=5, chosen_q=1.0,
                  rejected_q=0.0, chosen_visits=2, rejected_visits=2, rule="mcts_dpo/worst", split="train")


def test_worst_rule_gives_exactly_the_expected_pairs() -> None:
    pairs = extract_pairs([golden_tree()], PairConfig(q_margin=0.1, min_visits=1))
    assert pairs == [PreferencePair(**ROOT_PAIR), PreferencePair(**STEP2_PAIR)]
    assert pairs[0].q_gap == 0.5 and pairs[1].q_gap == 1.0


def test_second_rule_takes_the_runner_up() -> None:
    pairs = extract_pairs([golden_tree()], PairConfig(q_margin=0.1, rejected="second"))
    assert [p.to_dict() for p in pairs] == [
        {**ROOT_PAIR, "rejected": "Subtract 3 from 2.\n", "rejected_id": 3, "rejected_q": 0.5, "rejected_visits": 2,
         "rule": "mcts_dpo/second", "q_gap": 0.25},
        {**STEP2_PAIR, "rule": "mcts_dpo/second", "q_gap": 1.0},
    ]


def test_q_margin_filters_small_gaps() -> None:
    assert extract_pairs([golden_tree()], PairConfig(q_margin=0.5)) == [PreferencePair(**ROOT_PAIR), PreferencePair(**STEP2_PAIR)]
    assert extract_pairs([golden_tree()], PairConfig(q_margin=0.6)) == [PreferencePair(**STEP2_PAIR)]
    # 'second' at the root has a gap of 0.25
    assert [p.parent_id for p in extract_pairs([golden_tree()], PairConfig(q_margin=0.3, rejected="second"))] == [1]


def test_min_visits_excludes_children_from_ranking() -> None:
    # node 3 (2 visits) and nodes 4, 5 (2 visits) drop out; the root pair is 1 vs 2 under both rules
    for rule in ("worst", "second"):
        pairs = extract_pairs([golden_tree()], PairConfig(q_margin=0.1, min_visits=3, rejected=rule))
        assert [(p.parent_id, p.chosen_id, p.rejected_id) for p in pairs] == [(0, 1, 2)]


def test_max_pairs_per_tree_keeps_largest_gaps_and_tree_order() -> None:
    pairs = extract_pairs([golden_tree()], PairConfig(max_pairs_per_tree=1))
    assert pairs == [PreferencePair(**STEP2_PAIR)]
    stats: dict = {}
    extract_pairs([golden_tree()], PairConfig(max_pairs_per_tree=1), stats=stats)
    assert stats["skipped"] == {"over_max_pairs_per_tree": 1}


def test_equal_q_never_makes_a_pair() -> None:
    t = golden_tree()
    t.nodes[2].value_sum = 3.0  # q 0.75, tied with node 1
    t.nodes[3].value_sum = 1.5  # q 0.75
    pairs = extract_pairs([t], PairConfig(q_margin=0.0))
    assert [p.parent_id for p in pairs] == [1]


def test_custom_prompt_fn_and_delimiter() -> None:
    seen = []

    def prompt_fn(tree: Tree, node_id: int) -> str:
        seen.append((tree.tree_id, node_id))
        return f"<{tree.tree_id}:{node_id}>"

    pairs = extract_pairs([golden_tree()], PairConfig(delimiter="\n\n"), prompt_fn)
    assert seen == [("t1", 0), ("t1", 1)]
    assert [(p.prompt, p.chosen) for p in pairs] == [("<t1:0>", "Add 2 and 3.\n\n"), ("<t1:1>", "2+3=5. The answer is 5\n\n")]


def test_prompt_fn_must_return_text() -> None:
    with pytest.raises(TrainingDataError, match=r"prompt_fn\(tree 't1', node 0\) returned int, expected str"):
        extract_pairs([golden_tree()], prompt_fn=lambda t, n: 3)  # type: ignore[arg-type,return-value]


def test_no_trees_is_a_clear_error() -> None:
    with pytest.raises(TrainingDataError, match="extract_pairs got no trees: expected at least one mcts_agent.tree.Tree"):
        extract_pairs([])
    with pytest.raises(TrainingDataError, match="item 0 is a dict, expected mcts_agent.tree.Tree"):
        extract_pairs([{"tree_id": "x"}])  # type: ignore[list-item]
    with pytest.raises(TrainingDataError, match="wrap it in a list"):
        extract_pairs(golden_tree())  # type: ignore[arg-type]


def test_no_pair_meeting_thresholds_is_a_clear_error() -> None:
    with pytest.raises(TrainingDataError) as err:
        extract_pairs([golden_tree()], PairConfig(q_margin=1.5))
    msg = str(err.value)
    assert "no preference pair met the thresholds in 1 tree(s) (q_margin=1.5, min_visits=1, rejected='worst')" in msg
    assert "2 below q margin" in msg and "Lower q_margin or min_visits" in msg
    with pytest.raises(TrainingDataError, match="2 below min visits"):
        extract_pairs([golden_tree()], PairConfig(min_visits=5))
    with pytest.raises(TrainingDataError, match="no node has 2 or more children"):
        extract_pairs([Tree(tree_id="empty", task_id="e", question="?")])


@pytest.mark.parametrize("kwargs, message", [
    ({"q_margin": -0.1}, "PairConfig.q_margin must be a finite number >= 0, got -0.1"),
    ({"q_margin": float("nan")}, "PairConfig.q_margin must be a finite number >= 0, got nan"),
    ({"min_visits": 0}, "PairConfig.min_visits must be an int >= 1"),
    ({"rejected": "best"}, "PairConfig.rejected must be one of ('worst', 'second'), got 'best'"),
    ({"max_pairs_per_tree": 0}, "PairConfig.max_pairs_per_tree must be None or an int >= 1, got 0"),
    ({"validation": 1.0}, "PairConfig.validation must be in [0, 1), got 1.0"),
])
def test_config_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        PairConfig(**kwargs)


def test_stats() -> None:
    trees = [golden_tree("t1"), arithmetic_tree("t2", 4, 5), Tree(tree_id="t3", task_id="x", question="?")]
    stats: dict = {}
    pairs = extract_pairs(trees, PairConfig(), stats=stats)
    assert len(pairs) == 3
    assert stats == pair_stats(pairs, trees) | {"skipped": {}}
    assert stats["pairs_per_tree"] == {"t1": 2, "t2": 1, "t3": 0}
    assert stats["pairs_per_tree_mean"] == 1.0 and stats["trees_without_pairs"] == 1
    assert stats["q_gap"] == {"mean": pytest.approx(2.5 / 3), "min": 0.5, "max": 1.0}
    assert stats["depth_histogram"] == {"1": 2, "2": 1}
    assert stats["splits"] == {"train": 3}


def test_validation_split_is_by_tree_and_deterministic() -> None:
    trees = [arithmetic_tree(f"t{i}", i, 2 * i) for i in range(10)]
    cfg = PairConfig(validation=0.3, seed=1)
    a = extract_pairs(trees, cfg)
    b = extract_pairs(list(reversed(trees)), cfg)
    held = {p.tree_id for p in a if p.split == "validation"}
    assert len(held) == 3 and held == {p.tree_id for p in b if p.split == "validation"}
    assert held != {p.tree_id for p in extract_pairs(trees, PairConfig(validation=0.3, seed=2)) if p.split == "validation"}
    dd = split_dataset(pairs_to_dataset(a))
    assert (len(dd["train"]), len(dd["validation"])) == (7, 3)


def test_dataset_columns_and_round_trip(tmp_path) -> None:
    pairs = extract_pairs([golden_tree()])
    ds = pairs_to_dataset(pairs)
    assert ds.column_names[:3] == ["prompt", "chosen", "rejected"]
    assert set(ds.column_names) >= {"tree_id", "depth", "chosen_q", "rejected_q", "chosen_visits", "rejected_visits",
                                    "rule", "q_gap", "split"}
    assert ds[0] == pairs[0].to_dict()
    out = save_dataset(ds, tmp_path / "pairs")
    save_dataset(ds.select([1]), tmp_path / "pairs")  # replacing an existing dataset
    back = datasets.load_from_disk(str(out))
    assert back.to_list() == [pairs[1].to_dict()]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(TrainingDataError, match="no preference pairs to put in a dataset"):
        pairs_to_dataset([])


def test_env_prompt_fn_renders_what_the_policy_saw() -> None:
    from tests.toy_env import ToyMathEnv
    from mcts_agent.training.common import env_prompt_fn

    def fmt(messages: list[dict[str, str]]) -> str:
        return "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"

    pairs = extract_pairs([golden_tree()], prompt_fn=env_prompt_fn(ToyMathEnv(), fmt))
    assert [p.prompt for p in pairs] == ["User: What is 2+3?\nAssistant:", "User: What is 2+3?\nAssistant:Add 2 and 3.\n"]

"""Tree: lossless JSON round trip, NaN handling, schema and corruption errors, path helpers."""

from __future__ import annotations

import json
import math

import pytest

from mcts_agent.errors import TreeFormatError
from mcts_agent.tree import SCHEMA, SCHEMA_VERSION, Tree

NASTY = 'naïve 数学 🙂 "quoted" \\ back\nnew line\ttab \r\n crlf \u2028 </script><!-- x'


def make_tree() -> Tree:
    """root -> a (-> a1 terminal, a2 truncated) and b; every field set to a non-default value."""
    t = Tree(tree_id="t-1", task_id="gsm8k/7", question="Q: " + NASTY, algo="mcts", env_id="math",
             meta={"correct": True, "gold": "42", "nested": {"list": [1, 2.5, None], "s": NASTY}},
             stats={"model_calls": 3, "generated_tokens": 120, "seconds": 1.25})
    t.root.visits, t.root.value_sum = 4, 2.5
    a = t.add_child(0, action="Step A " + NASTY, token_ids=[1, 50000, 7], logprob=-3.25, prior=0.7, visits=3,
                    value_sum=2.0, value=0.6, critic_scores={"self_eval": 0.75, "judge": 0.5}, finish_reason="stop",
                    merged=2, tokens=3, seconds=0.125)
    t.add_child(0, action="Step B", prior=0.3, visits=1, value_sum=0.5, value=0.5, tokens=2)
    a1 = t.add_child(a.id, action="The answer is 42.", terminal=True, answer="42", reward=1.0, visits=2,
                     value_sum=2.0, finish_reason="stop", tokens=5)
    t.add_child(a.id, action="Hmm " * 5, truncated=True, finish_reason="length", visits=1, tokens=16)
    t.answer, t.answer_node = "42", a1.id
    return t


def test_round_trip_is_lossless_including_unicode() -> None:
    tree = make_tree()
    text = tree.to_json()
    assert "\n" not in text  # one tree per line in trees.jsonl
    assert "🙂" in text and "数学" in text  # written as UTF-8, not \u escapes
    back = Tree.from_json(text)
    assert back == tree
    assert [n.action for n in back.nodes] == [n.action for n in tree.nodes]
    assert back.to_json() == text
    assert Tree.from_dict(json.loads(text)) == tree


def test_runtime_only_fields_are_not_serialized() -> None:
    tree = make_tree()
    tree.nodes[1].virtual_loss, tree.nodes[1].state = 3, object()
    data = tree.to_dict()
    assert "virtual_loss" not in data["nodes"] and "state" not in data["nodes"]
    back = Tree.from_json(tree.to_json())
    assert back.nodes[1].virtual_loss == 0 and back.nodes[1].state is None


def test_non_finite_floats_become_none_and_json_stays_valid() -> None:
    tree = make_tree()
    tree.nodes[1].value = math.nan
    tree.nodes[2].reward = math.inf
    tree.nodes[3].value_sum = -math.inf
    text = tree.to_json()

    def reject(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name} written")

    data = json.loads(text, parse_constant=reject)
    assert data["nodes"]["value"][1] is None and data["nodes"]["reward"][2] is None
    back = Tree.from_json(text)
    assert back.nodes[1].value is None and back.nodes[2].reward is None and back.nodes[3].value_sum is None


def test_empty_tree_has_a_root() -> None:
    tree = Tree(tree_id="t", task_id="x", question="q")
    assert len(tree) == 1 and tree.root.parent is None and tree.root.depth == 0
    assert Tree.from_json(tree.to_json()) == tree


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=SCHEMA_VERSION + 1), f"unsupported tree schema version {SCHEMA_VERSION + 1}"),
        (lambda d: d.pop("version"), "unsupported tree schema version None"),
        (lambda d: d.update(schema="something/else"), f"expected schema {SCHEMA!r}, got 'something/else'"),
        (lambda d: d.pop("question"), "missing or has a malformed field"),
        (lambda d: d["nodes"]["visits"].pop(), "node columns ['visits'] do not have 5 entries"),
        (lambda d: d["nodes"].pop("prior"), "missing or has a malformed field: 'prior'"),
        (lambda d: d["nodes"].update(id=[0, 2, 1, 3, 4]), "node ids are not 0..4 in order"),
    ],
)
def test_schema_errors_name_the_problem(mutate, message: str) -> None:
    data = make_tree().to_dict()
    mutate(data)
    with pytest.raises(TreeFormatError) as e:
        Tree.from_dict(data)
    assert message in str(e.value)


def test_not_a_tree_object() -> None:
    with pytest.raises(TreeFormatError, match="not an mcts-agent tree.*got 'list'"):
        Tree.from_json("[1, 2]")


@pytest.mark.parametrize("text", ['{"schema": "mcts-agent/tree", "vers', "", "not json", '{"a": 1}}'])
def test_corrupted_json_is_a_tree_format_error(text: str) -> None:
    with pytest.raises(TreeFormatError):
        Tree.from_json(text)


def test_truncated_line_says_corrupted() -> None:
    text = make_tree().to_json()
    with pytest.raises(TreeFormatError, match="tree JSON is corrupted"):
        Tree.from_json(text[: len(text) // 2])


def test_path_steps_and_helpers() -> None:
    tree = make_tree()
    answer = tree.answer_node
    assert [n.id for n in tree.path(answer)] == [0, 1, 3]
    assert tree.steps(answer) == ["Step A " + NASTY, "The answer is 42."]
    assert tree.path(0) == [tree.root] and tree.steps(0) == []
    assert [n.depth for n in tree.nodes] == [0, 1, 1, 2, 2]
    assert tree.root.children == [1, 2] and tree.nodes[1].children == [3, 4]
    assert [n.id for n in tree.leaves()] == [2, 3, 4]
    assert [n.id for n in tree.terminals()] == [3]
    assert tree.nodes[4].done and tree.nodes[3].done and not tree.nodes[1].done
    assert tree.nodes[1].q == pytest.approx(2.0 / 3) and Tree(tree_id="t", task_id="x", question="q").root.q == 0.0
    assert len(tree) == 5 and [n.id for n in tree] == [0, 1, 2, 3, 4]

"""trees.jsonl on disk: atomic saves, line-atomic appends, corrupted and torn lines."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Iterator

import pytest

from mcts_agent.errors import TreeFormatError
from mcts_agent.io import append_tree, atomic_write_json, atomic_write_text, iter_trees, load_trees, save_trees
from mcts_agent.tree import Tree


def tree(i: int) -> Tree:
    t = Tree(tree_id=f"t{i}", task_id=f"task-{i}", question=f"question {i} ✓")
    t.add_child(0, action=f"step of tree {i}\nsecond line", token_ids=[i, i + 1], visits=1, value_sum=0.5)
    return t


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "trees.jsonl"
    assert save_trees(path, (tree(i) for i in range(3))) == 3
    assert load_trees(path) == [tree(i) for i in range(3)]
    assert path.read_text(encoding="utf-8").count("\n") == 3
    assert leftovers(path.parent) == []


def test_failed_save_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "trees.jsonl"
    save_trees(path, [tree(0)])
    before = path.read_bytes()

    def broken() -> Iterator[Tree]:
        yield tree(1)
        raise RuntimeError("killed mid-save")

    with pytest.raises(RuntimeError):
        save_trees(path, broken())
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_atomic_write_text_replaces_and_keeps_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")
    os.chmod(path, 0o640)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    atomic_write_text(path, "new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert synced, "the temp file was not fsynced"
    assert leftovers(tmp_path) == []


def test_atomic_write_json(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    atomic_write_json(path, {"accuracy": 0.5, "name": "ü"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"accuracy": 0.5, "name": "ü"}
    with pytest.raises(ValueError, match="summary.json"):
        atomic_write_json(path, {"accuracy": float("nan")})
    assert json.loads(path.read_text(encoding="utf-8"))["accuracy"] == 0.5  # untouched
    assert leftovers(tmp_path) == []


def test_append_and_load_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "trees.jsonl"
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    for i in range(3):
        append_tree(path, tree(i))
    assert len(synced) == 3
    assert [t.tree_id for t in load_trees(path)] == ["t0", "t1", "t2"]
    assert [t.tree_id for t in iter_trees(path)] == ["t0", "t1", "t2"]


def test_corrupted_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "trees.jsonl"
    lines = [tree(0).to_json(), tree(1).to_json()[:40], tree(2).to_json()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(TreeFormatError) as e:
        load_trees(path)
    assert str(e.value).startswith(f"{path}:2: tree JSON is corrupted")


def test_wrong_version_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "trees.jsonl"
    bad = tree(1).to_dict() | {"version": 99}
    path.write_text(f"{tree(0).to_json()}\n\n{json.dumps(bad)}\n", encoding="utf-8")
    with pytest.raises(TreeFormatError, match=r"trees\.jsonl:3: unsupported tree schema version 99"):
        load_trees(path)


def test_invalid_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "trees.jsonl"
    path.write_bytes(tree(0).to_json().encode() + b"\n\xff\xfe garbage\n")
    with pytest.raises(TreeFormatError, match=r"trees\.jsonl:2: .*utf-8"):
        load_trees(path)


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "trees.jsonl"
    path.write_text(f"\n{tree(0).to_json()}\n   \n{tree(1).to_json()}\n\n", encoding="utf-8")
    assert [t.tree_id for t in load_trees(path)] == ["t0", "t1"]


def test_torn_last_line_is_skipped_then_repaired_by_append(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "trees.jsonl"
    save_trees(path, [tree(0), tree(1)])
    with open(path, "a", encoding="utf-8") as f:  # a crash in the middle of an append
        f.write(tree(2).to_json()[:57])
    with caplog.at_level(logging.WARNING):
        assert [t.tree_id for t in load_trees(path)] == ["t0", "t1"]
    assert "torn last line" in caplog.text and f"{path}:3" in caplog.text
    append_tree(path, tree(3))
    assert [t.tree_id for t in load_trees(path)] == ["t0", "t1", "t3"]
    assert path.read_text(encoding="utf-8").endswith("\n")


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "trees.jsonl"
    path.write_text(tree(0).to_json(), encoding="utf-8")  # e.g. written by hand
    assert [t.tree_id for t in load_trees(path)] == ["t0"]
    append_tree(path, tree(1))
    assert [t.tree_id for t in load_trees(path)] == ["t0", "t1"]


def test_complete_but_invalid_last_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "trees.jsonl"
    path.write_text(tree(0).to_json() + '\n{"schema": "other"}', encoding="utf-8")
    with pytest.raises(TreeFormatError, match=r"trees\.jsonl:2: not an mcts-agent tree"):
        load_trees(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_trees(tmp_path / "nope.jsonl")


def test_json_safe() -> None:
    import enum

    from mcts_agent.io import json_safe

    class Color(str, enum.Enum):
        RED = "red"

    assert json_safe({"a": float("nan"), 1: (1, float("inf"), Color.RED), "b": [None, True, 2.5, Path("x")]}) == {
        "a": None, "1": [1, None, "red"], "b": [None, True, 2.5, "x"]}


def _with(t: Tree, **cols: list) -> dict:
    d = t.to_dict()
    d["nodes"].update(cols)
    return d


@pytest.mark.parametrize("broken, message", [
    (lambda d: d["nodes"].update(parent=[None, 2, 1], children=[[], [2], [1]]),
     "node 1 has parent 2; expected the id of an earlier node (0..0): parents precede their children"),
    (lambda d: d["nodes"].update(parent=[None, 0, 7]),
     "node 2 has parent 7; expected the id of an earlier node (0..1)"),
    (lambda d: d["nodes"].update(parent=[0, 0, 1]), "node 0 must be the root (parent null), got parent 0"),
    (lambda d: d["nodes"].update(children=[[1], [2], [0]]), "node 2 lists children [0], but the nodes whose parent it is are []"),
    (lambda d: d.update(answer_node=9), "answer_node 9 is not a node id (0..2)"),
])
def test_malformed_structure_names_file_line_and_node(tmp_path: Path, broken, message: str) -> None:
    """A cycle, a dangling parent, a second root, inconsistent children or a missing answer node are
    refused in one linear pass (a cycle once made the GraphML export eat 24 GB)."""
    t = tree(1)
    t.add_child(1, action="deeper")
    t.answer_node = 2
    d = t.to_dict()
    broken(d)
    path = tmp_path / "trees.jsonl"
    path.write_text(f"{tree(0).to_json()}\n{json.dumps(d)}\n", encoding="utf-8")
    with pytest.raises(TreeFormatError, match=r"trees\.jsonl:2: tree 't1': ") as e:
        load_trees(path)
    assert message in str(e.value)

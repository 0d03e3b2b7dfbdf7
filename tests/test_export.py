"""Exports: networkx/GraphML round trip, the offline viewer file, statistics, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import networkx as nx
import pytest
import typer
from typer.testing import CliRunner

from mcts_agent.cli import export as cli_export
from mcts_agent.export.analysis import aggregate_stats, tree_stats
from mcts_agent.export.graph import tree_to_networkx, trees_to_networkx, write_graphml
from mcts_agent.export.viewer import render_viewer, write_viewer
from mcts_agent.io import save_trees
from mcts_agent.tree import _COLUMNS, Tree

EVIL = 'a < b & "c" </script><script>alert(1)</script> <!-- ü 🙂 \r\n\t\x00\x07 end'


def sample(i: int = 0, correct: bool | None = True) -> Tree:
    t = Tree(tree_id=f"tree-{i}", task_id=f"task-{i}", question="What is 6 * 7? " + EVIL, algo="mcts", env_id="math",
             meta={} if correct is None else {"correct": correct}, stats={"model_calls": 4, "generated_tokens": 50})
    t.root.visits, t.root.value_sum = 5, 3.0
    a = t.add_child(0, action="6 * 7 = 42. " + EVIL, token_ids=[21, 22, 23], prior=0.6, visits=4, value_sum=3.0,
                    value=0.7, critic_scores={"self_eval": 0.8}, finish_reason="stop", tokens=3, seconds=0.5)
    b = t.add_child(0, action="6 * 7 = 48.", prior=0.4, visits=1, value_sum=0.0, value=float("nan"), tokens=3)
    ans = t.add_child(a.id, action="The answer is 42.", terminal=True, answer="42", reward=1, visits=3, value_sum=3.0)
    t.add_child(a.id, action="Hmm", truncated=True, finish_reason="length", visits=1)
    t.add_child(b.id, action="The answer is 48.", terminal=True, answer="48", reward=0.0)
    t.answer, t.answer_node = "42", ans.id
    return t


# ----- networkx / GraphML -------------------------------------------------------------------
def test_every_serialized_node_field_is_exported() -> None:
    from mcts_agent.export.graph import _FIELD_TYPES

    assert set(_FIELD_TYPES) == set(_COLUMNS)


def test_tree_to_networkx() -> None:
    t = sample()
    g = tree_to_networkx(t)
    assert sorted(g.nodes) == list(range(6)) and sorted(g.edges) == [(0, 1), (0, 2), (1, 3), (1, 4), (2, 5)]
    a = g.nodes[1]
    assert set(_COLUMNS) <= set(a) | {"parent", "value", "reward", "answer", "observation", "context"}
    assert json.loads(a["token_ids"]) == [21, 22, 23] and json.loads(a["critic_scores"]) == {"self_eval": 0.8}
    assert json.loads(a["children"]) == [3, 4] and a["q"] == pytest.approx(0.75)
    assert "parent" not in g.nodes[0] and "value" not in g.nodes[2]  # None / NaN are left out
    assert g.nodes[3]["reward"] == 1.0 and isinstance(g.nodes[3]["reward"], float)
    assert [n for n, d in g.nodes(data=True) if d["on_answer_path"]] == [0, 1, 3]
    assert g.graph["task_id"] == "task-0" and json.loads(g.graph["meta"]) == {"correct": True}


def test_networkx_writer_accepts_the_attributes(tmp_path: Path) -> None:
    t = sample()
    for n in t.nodes:  # networkx's own writer rejects control characters; everything else must be accepted
        n.action = n.action.replace("\x00", "").replace("\x07", "")
    t.question = t.question.replace("\x00", "").replace("\x07", "")
    nx.write_graphml(tree_to_networkx(t), tmp_path / "nx.graphml")
    assert len(nx.read_graphml(tmp_path / "nx.graphml")) == 6


def test_graphml_round_trip_via_networkx(tmp_path: Path) -> None:
    t = sample()
    path = tmp_path / "tree.graphml"
    write_graphml(t, path)
    back = nx.read_graphml(path, node_type=int)
    want = tree_to_networkx(t)
    assert sorted(back.edges) == sorted(want.edges)
    for i in want.nodes:
        got, exp = back.nodes[i], dict(want.nodes[i])
        # characters XML 1.0 cannot carry are replaced; everything else (\r, unicode, markup) survives
        exp["action"] = exp["action"].replace("\x00", "\ufffd").replace("\x07", "\ufffd")
        assert got == exp, i
    assert back.nodes[1]["action"].endswith("🙂 \r\n\t\ufffd\ufffd end")
    assert {k: back.graph[k] for k in want.graph} == {**want.graph, "question": want.graph["question"].replace("\x00", "\ufffd").replace("\x07", "\ufffd")}
    assert not list(tmp_path.glob("*.tmp"))


def test_graphml_of_several_trees(tmp_path: Path) -> None:
    trees = [sample(0), sample(1, correct=False)]
    path = tmp_path / "trees.graphml"
    write_graphml(trees, path)
    back = nx.read_graphml(path)
    assert len(back) == 12 and back.number_of_edges() == 10
    assert back.nodes["tree-1:3"]["tree_id"] == "tree-1" and back.has_edge("tree-1:0", "tree-1:2")
    assert [h["tree_id"] for h in json.loads(back.graph["trees"])] == ["tree-0", "tree-1"]
    g = trees_to_networkx(trees)
    assert sorted(g.nodes) == sorted(back.nodes) and sorted(g.edges) == sorted(back.edges)


def test_write_graphml_rejects_non_trees(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="expects Tree objects, got dict"):
        write_graphml([{"nodes": []}], tmp_path / "x.graphml")  # type: ignore[list-item]


# ----- viewer ---------------------------------------------------------------------------
def _embedded(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="mcts-data">(.*?)</script>', page, re.S)
    assert m, "data tag not found"
    return json.loads(m.group(1))


def test_viewer_is_self_contained(tmp_path: Path) -> None:
    path = tmp_path / "viewer.html"
    write_viewer([sample(0), sample(1, correct=False)], path, title="runs <b>x</b>")
    page = path.read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|img|iframe|object|embed)\b[^>]*\b(src|href)\s*=", page, re.I)
    assert not re.search(r"https?://", page)
    assert not re.search(r"@import|url\(", page)
    assert "default-src 'none'" in page  # the page may not fetch anything, even if data says so
    assert "<title>runs &lt;b&gt;x&lt;/b&gt;</title>" in page
    assert page.count("</script>") == 2  # the data tag and the code tag; step texts cannot close either


def test_viewer_embeds_the_data_losslessly() -> None:
    trees = [sample(0), sample(1, correct=None)]
    data = _embedded(render_viewer(trees))
    assert [t["tree_id"] for t in data["trees"]] == ["tree-0", "tree-1"]
    t0 = data["trees"][0]
    assert t0["nodes"]["action"][1] == "6 * 7 = 42. " + EVIL
    assert t0["question"] == trees[0].question and t0["answer_node"] == 3 and t0["meta"] == {"correct": True}
    assert t0["nodes"]["value"][2] is None  # NaN
    assert t0["nodes"]["children"] == [[1, 2], [3, 4], [5], [], [], []]
    assert "token_ids" not in t0["nodes"]
    assert data["summary"] == "12 nodes · 1/1 correct"
    assert t0["summary"] == {"nodes": 6, "max_depth": 2, "terminals": 2, "distinct_answers": 2}


def test_viewer_title_names_the_environment_and_tree_count() -> None:
    title = lambda page: re.search(r"<title>(.*?)</title>", page).group(1)
    assert title(render_viewer([sample(0), sample(1)])) == "mcts-agent trees: math (2 trees)"
    t = sample(0)
    t.env_id, t.meta["env_id"] = "", "gsm8k"  # meta's env_id (written by search) is read too
    assert title(render_viewer([t])) == "mcts-agent trees: gsm8k (1 tree)"
    bare = Tree(tree_id="x", task_id="x", question="q")
    assert title(render_viewer([bare, sample(0)])) == "mcts-agent trees: math (2 trees)"
    assert title(render_viewer([bare])) == "mcts-agent trees (1 tree)"
    assert title(render_viewer([sample(0)], title="my run")) == "my run"  # an explicit title wins
    assert _embedded(render_viewer([sample(0)]))["title"] == "mcts-agent trees: math (1 tree)"


def test_viewer_embeds_prompt_deltas_once_and_only_when_recorded() -> None:
    assert "context" not in _embedded(render_viewer([sample()]))["trees"][0]["nodes"]  # nothing recorded: no column
    t = sample()
    obs = "The tool replied with a long observation: " + EVIL
    t.nodes[1].observation = obs
    t.record_prompt(0, "SYSTEM <s>\nQ: " + t.question + "\nA:")
    t.record_prompt(1, t.prompt(0) + t.nodes[1].action + "\nTool: " + obs + "\nA:")
    t.record_prompt(2, "a rewritten prompt")
    t.record_prompt(3, t.prompt(1) + t.nodes[3].action + "\nshort")
    nodes = _embedded(render_viewer([t]))["trees"][0]["nodes"]
    # deltas from the parent's prompt; the question and the observation (held elsewhere) are not repeated
    assert nodes["context"] == [["SYSTEM <s>\nQ: ", "\nA:"], ["\nTool: ", "\nA:"], "a rewritten prompt", "\nshort", None, None]
    assert nodes["context_full"] == [False, False, True, False, False, False]


def test_viewer_has_no_external_references_outside_the_data(tmp_path: Path) -> None:
    t = sample()
    t.nodes[1].action += " see https://example.com/a and http://example.org/b"
    t.meta["gold"] = "42"
    page = render_viewer([t])
    data = re.search(r'<script type="application/json" id="mcts-data">.*?</script>', page, re.S).group(0)
    assert "https://example.com/a" in data  # step text is data, kept as is
    assert not re.search(r"https?://", page.replace(data, ""))  # the page itself (code, styles, SVG) names no URL
    assert _embedded(page)["trees"][0]["meta"]["gold"] == "42"  # the gold answer reaches the page


# ----- statistics -------------------------------------------------------------------------
def test_tree_stats() -> None:
    s = tree_stats(sample())
    assert s["nodes"] == 6 and s["leaves"] == 3 and s["expanded"] == 3
    assert s["depth_histogram"] == {0: 1, 1: 2, 2: 3} and s["max_depth"] == 2
    assert s["branching_histogram"] == {1: 1, 2: 2} and s["branching_mean"] == pytest.approx(5 / 3) and s["branching_max"] == 2
    assert s["terminals"] == 2 and s["truncated"] == 1
    assert s["distinct_answers"] == 2 and s["answer_counts"] == {"42": 1, "48": 1}
    assert s["correct"] is True and s["root_visits"] == 5 and s["node_tokens"] == 6
    assert s["stats"] == {"model_calls": 4, "generated_tokens": 50}
    json.dumps(s)


def test_aggregate_stats() -> None:
    trees = [sample(0), sample(1, correct=False), sample(2, correct=None)]
    a = aggregate_stats(trees, per_tree=True)
    assert a["trees"] == 3 and a["nodes"] == 18 and a["max_depth"] == 2
    assert a["correct"] == 1 and a["correct_known"] == 2 and a["accuracy"] == 0.5
    assert a["stats"] == {"model_calls": 12, "generated_tokens": 150}
    assert a["depth_histogram"] == {0: 3, 1: 6, 2: 9} and a["branching_mean"] == pytest.approx(5 / 3)
    assert len(a["per_tree"]) == 3 and "per_tree" not in aggregate_stats(trees)
    assert aggregate_stats([])["accuracy"] is None
    json.dumps(a)


# ----- CLI ----------------------------------------------------------------------------------
@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    cli_export.register(app)
    return app


@pytest.fixture()
def trees_file(tmp_path: Path) -> Path:
    path = tmp_path / "trees.jsonl"
    save_trees(path, [sample(0), sample(1, correct=False)])
    return path


def run(app: typer.Typer, *args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("fmt", ["graphml", "json", "html", "stats"])
def test_cli_export_formats(cli: typer.Typer, trees_file: Path, fmt: str) -> None:
    out = trees_file.parent / f"out.{fmt}"
    r = run(cli, "export", trees_file, "--format", fmt, "--out", out)
    assert r.exit_code == 0, r.output
    assert f"wrote {out}" in r.output
    if fmt == "graphml":
        assert len(nx.read_graphml(out)) == 12
    elif fmt == "json":
        want = [Tree.from_json(t.to_json()) for t in (sample(0), sample(1, correct=False))]  # NaN -> None
        assert [Tree.from_dict(d) for d in json.loads(out.read_text(encoding="utf-8"))] == want
    elif fmt == "html":
        assert len(_embedded(out.read_text(encoding="utf-8"))["trees"]) == 2
    else:
        assert json.loads(out.read_text())["accuracy"] == 0.5 and "2 trees" in r.output


def test_cli_export_defaults_and_filter(cli: typer.Typer, trees_file: Path) -> None:
    r = run(cli, "export", trees_file, "--format", "graphml", "--tree", "task-1")
    assert r.exit_code == 0, r.output
    g = nx.read_graphml(trees_file.with_suffix(".graphml"), node_type=int)  # one tree keeps integer ids
    assert len(g) == 6 and g.graph["tree_id"] == "tree-1"
    r = run(cli, "export", trees_file, "--out", trees_file.parent / "x.html")  # format from the suffix
    assert r.exit_code == 0 and (trees_file.parent / "x.html").exists()


def test_cli_view(cli: typer.Typer, trees_file: Path) -> None:
    r = run(cli, "view", trees_file, "--no-open")
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(trees_file.with_suffix(".html"))
    r = run(cli, "view", trees_file, "--out", trees_file.parent / "v" / "viewer.html", "--title", "my run")
    assert r.exit_code == 0 and "<title>my run</title>" in (trees_file.parent / "v" / "viewer.html").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "trees file '{path}' does not exist"),
        ("", "trees file '{path}' holds no trees"),
        ("GOOD\n{broken\n", "{path}:2: tree JSON is corrupted"),
    ],
)
def test_cli_bad_input_exits_2_and_keeps_output(cli: typer.Typer, tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "trees.jsonl"
    if content is not None:
        path.write_text(content.replace("GOOD", sample().to_json()), encoding="utf-8")
    out = tmp_path / "viewer.html"
    out.write_text("previous output")
    for args in (("view", path, "--out", out), ("export", path, "--format", "html", "--out", out)):
        r = run(cli, *args)
        assert r.exit_code == 2, r.output
        assert message.format(path=path) in r.output
        assert out.read_text() == "previous output"


def test_cli_usage_errors(cli: typer.Typer, trees_file: Path) -> None:
    r = run(cli, "export", trees_file, "--format", "json", "--out", trees_file)
    assert r.exit_code == 2 and "is the input file" in r.output
    r = run(cli, "export", trees_file)
    assert r.exit_code == 2 and "give --format" in r.output
    r = run(cli, "export", trees_file, "--format", "pdf")
    assert r.exit_code == 2 and "pdf" in r.output
    r = run(cli, "export", trees_file, "--format", "stats", "--tree", "nope")
    assert r.exit_code == 2 and "no tree with id or task id ['nope']" in r.output
    r = run(cli, "view", trees_file, "--out", trees_file.parent)
    assert r.exit_code == 2 and "is a directory" in r.output


def test_scale_benchmark_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mcts_agent.benchmarks.scale import main

    result = main(["--nodes", "300", "--out", str(tmp_path / "scale.json")])
    figures = json.loads((tmp_path / "scale.json").read_text())["export"]
    assert figures == result["export"] and figures["nodes"] == 300
    assert figures["load_s"] >= 0 and figures["bytes_per_node_beyond_text"] > 0
    assert "graphml_cpu_s" in capsys.readouterr().out


def test_non_finite_and_odd_values_do_not_break_exports(tmp_path: Path) -> None:
    t = sample()
    t.nodes[1].critic_scores = {"self_eval": float("nan"), "judge": 0.5}
    t.meta["weird"] = {"inf": float("inf"), "path": Path("a/b"), "tuple": (1, 2)}
    write_graphml(t, tmp_path / "t.graphml")
    back = nx.read_graphml(tmp_path / "t.graphml", node_type=int)
    assert json.loads(back.nodes[1]["critic_scores"]) == {"self_eval": None, "judge": 0.5}
    assert json.loads(back.graph["meta"])["weird"] == {"inf": None, "path": "a/b", "tuple": [1, 2]}
    data = _embedded(render_viewer([t]))
    assert data["trees"][0]["nodes"]["critic_scores"][1] == {"self_eval": None, "judge": 0.5}
    assert data["trees"][0]["meta"]["weird"]["inf"] is None


def test_cli_refuses_a_cyclic_tree_before_exporting(cli: typer.Typer, tmp_path: Path) -> None:
    d = sample().to_dict()
    n = len(d["nodes"]["id"])
    d["nodes"]["parent"] = [None] + [n - 1] + d["nodes"]["parent"][2:]  # node 1 under the last node: a cycle
    path = tmp_path / "trees.jsonl"
    path.write_text(json.dumps(d) + "\n", encoding="utf-8")
    out = tmp_path / "t.graphml"
    for args in (("export", path, "--format", "graphml", "--out", out), ("view", path, "--out", tmp_path / "v.html")):
        r = run(cli, *args)
        assert r.exit_code == 2, r.output
        assert f"{path}:1: tree " in r.output and "node 1 has parent" in r.output
    assert not out.exists()

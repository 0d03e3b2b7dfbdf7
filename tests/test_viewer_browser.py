"""The offline viewer in a real headless chromium, through the page's own handlers.

The page has a self-test (``?selftest=1``) that selects the first tree, checks that it opened
with the answer path expanded, reads the header (one "nodes" chip, the gold chip, the
legend) and the answer badges (coloured by correctness), clicks a node of the drawing and
reads the detail panel, switches the drawing to "colour by correctness", searches (``?q=``),
jumps to a match and filters by it, then expands and collapses through the toggles; it writes
the result into the document title, which ``--dump-dom`` shows. Screenshots go to
``$MCTS_AGENT_TEST_ARTIFACTS`` (else the test's tmp_path). Install chromium with
``scripts/install_system_deps.sh``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from mcts_agent.export.viewer import write_viewer
from mcts_agent.tree import Tree

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (run scripts/install_system_deps.sh)"),
]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def artifacts_dir(tmp_path: Path) -> Path:
    """Where screenshots go: ``$MCTS_AGENT_TEST_ARTIFACTS/viewer`` when set, else the test's tmp_path."""
    root = os.environ.get("MCTS_AGENT_TEST_ARTIFACTS")
    out = Path(root) / "viewer" if root else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    return out


def selftest(tmp_path: Path, trees: list[Tree], **options: str | int) -> dict:
    """Run the page's self-test (URL options such as ``q``, ``node``, ``tree`` passed on) and return its result."""
    page = tmp_path / "viewer.html"
    write_viewer(trees, page, title="browser test")
    query = "".join(f"&{k}={quote(str(v))}" for k, v in options.items())
    dom = chromium(tmp_path, "--dump-dom", page.as_uri() + "?selftest=1" + query)
    m = re.search(r"<title>SELFTEST (PASS|FAIL) (.*?)</title>", dom, re.S)
    assert m, f"the self-test did not run; page title: {re.search(r'<title>.*?</title>', dom)}"
    result = json.loads(html.unescape(m.group(2)))
    assert m.group(1) == "PASS", result
    return result


def screenshot(tmp_path: Path, page: Path, name: str, url_options: str = "") -> Path:
    """A 1400x900 screenshot of ``page`` saved as ``name`` under the artifacts folder; checked to be a real PNG."""
    shot = artifacts_dir(tmp_path) / name
    chromium(tmp_path, "--window-size=1400,900", "--hide-scrollbars", f"--screenshot={shot}", page.as_uri() + url_options)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, (shot, len(data))
    return shot


def deep_tree() -> Tree:
    """root with 3 children, each a chain; the answer 6 levels down, step texts that try to break the page.

    Graded like an evaluation run: ``meta`` has ``correct`` and ``gold``, every reward is 0. Prompts
    are recorded on the expanded nodes (deltas, one node with a whole rewritten prompt).
    """
    t = Tree(tree_id="deep", task_id="task-deep", question="What </script> is <b>6 * 7</b>? Think it through.", env_id="math",
             meta={"correct": True, "gold": "42", "env_id": "math"}, stats={"nodes": 19, "generated_tokens": 120})
    t.root.visits, t.root.value_sum = 9, 5.0
    t.record_prompt(0, f"SYSTEM: think step by step.\nUSER: {t.question}\nASSISTANT: ")
    for c in range(3):
        nid = t.add_child(0, action=f"branch {c} </script><script>document.title='pwned'</script>", visits=3,
                          value_sum=0.6 * c, value=0.3 * c, prior=0.2 + 0.1 * c, critic_scores={"self_eval": 0.1 * c},
                          tokens=7 + c, seconds=0.25).id
        t.record_prompt(nid, t.prompt(0) + t.nodes[nid].action + "\n")
        for d in range(5):
            nid = t.add_child(nid, action=f"step {d} of branch {c} 🙂", visits=2, value_sum=1.0, tokens=5).id
            if c == 0 and d == 0:
                t.nodes[nid].observation = "The calculator replied: 6 * 7 = 42 </script> (a tool observation)"
            if d < 4:
                obs = t.nodes[nid].observation
                t.record_prompt(nid, t.prompt(t.nodes[nid].parent) + t.nodes[nid].action + (f"\nTool: {obs}" if obs else "") + "\n")
        t.nodes[nid].terminal, t.nodes[nid].answer, t.nodes[nid].reward = True, str(40 + c), 0.0
    t.nodes[8].context, t.nodes[8].context_full = "A rewritten history: " + t.nodes[8].action, True  # a template rewrote it
    t.answer_node, t.answer = nid, t.nodes[nid].answer
    return t


def wide_tree(width: int = 450) -> Tree:
    """A root with more children than one page renders; the answer is a child on the third page."""
    t = Tree(tree_id="wide", task_id="task-wide", question="wide")
    for i in range(width):
        t.add_child(0, action=f"candidate {i}", visits=1)
    t.answer_node = width - 5
    t.nodes[t.answer_node].terminal = True
    return t


def other_verdicts_tree() -> Tree:
    """Correctness unknown: a tool-env gold (not a string), rewards as the only signal."""
    t = Tree(tree_id="tools", task_id="task-tools", question="call the tool", meta={"gold": [{"name": "f", "args": {}}]})
    t.add_child(0, action="f()", terminal=True, answer="f()", reward=0.0)  # no correctness, reward 0: neutral
    t.add_child(0, action="g()", terminal=True, answer="g()", reward=1.0)  # no correctness, reward 1: correct
    t.add_child(0, action="h()", terminal=True, answer="h()", reward=-1.0)  # negative reward: wrong
    t.answer_node, t.answer = 1, "f()"
    return t


def big_tree(n: int = 100_000) -> Tree:
    """A 100k-node tree: 300 root children, then 4 children per node; visits fall with the id; the answer is the last node."""
    t = Tree(tree_id="big", task_id="task-big", question="big", meta={"correct": False})
    t.root.visits = n
    for i in range(1, n):
        parent = 0 if i <= 300 else 1 + (i - 301) // 4
        t.add_child(parent, action=f"candidate {i}", visits=max(1, n // (i + 1)), value_sum=0.5)
    last = t.nodes[-1]
    last.terminal, last.answer = True, "7"
    t.answer_node, t.answer = last.id, "7"
    return t


@pytest.fixture(scope="module")
def deep_result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The self-test of a page holding the deep tree (first) and the tree with reward-only verdicts."""
    return selftest(tmp_path_factory.mktemp("deep"), [deep_tree(), other_verdicts_tree()], q="of branch 1")


def test_expand_and_collapse_in_chromium(deep_result: dict) -> None:
    r = deep_result
    assert r["trees"] == 2
    assert r["visible_before"] == 1 and r["rendered_before"] == 1  # children are rendered lazily
    assert r["visible_expanded"] == 4  # root + its 3 children
    assert r["visible_collapsed"] == 1 and r["rendered_after_collapse"] == 4  # hidden, kept in the DOM
    assert r["path_rows_visible"] == r["expected_path_rows"] == 7 and r["answer_visible"] is True
    assert r["visible_after_collapse_all"] == 1


def test_opens_with_the_answer_path_expanded(deep_result: dict) -> None:
    r = deep_result
    assert r["default_root_open"] is True
    assert r["default_path_rows_visible"] == r["expected_path_rows"] == 7  # root ... answer, all shown
    assert r["default_selected"] == 18  # the answer is selected: the detail panel is filled on open


def test_wide_node_renders_children_in_pages(tmp_path: Path) -> None:
    r = selftest(tmp_path, [wide_tree()])
    assert r["visible_expanded"] == 1 + 200  # one page of children, then a "show more" row
    assert r["path_rows_visible"] == 2 and r["answer_visible"] is True  # revealing clicked "show more" twice
    assert r["svg_nodes"] == 451 and r["draw_truncated"] is False


def test_header_shows_gold_legend_and_nodes_once(deep_result: dict) -> None:
    r = deep_result
    assert r["gold_chip"] == "gold: 42"
    assert r["nodes_chips"] == 1  # the summary's "nodes", not again from stats
    assert len(r["legend_terms"]) == 7 and r["legend_visible"] is True
    assert "correct" in r["answer_chip_class"].split()


def test_answers_are_coloured_by_correctness_not_reward(deep_result: dict) -> None:
    r = deep_result
    assert "correct" in r["answer_badge_class"].split() and "wrong" not in r["answer_badge_class"].split()
    red, green, _ = map(int, re.findall(r"\d+", r["answer_badge_bg"])[:3])
    assert green > red  # green, although the answer's reward is 0 (an evaluation run)
    deep, tools = r["verdicts"]
    assert deep == {"6": "wrong", "12": "wrong", "18": "correct"}  # others compared with the gold string
    assert tools == {"1": "", "2": "correct", "3": "wrong"}  # no correctness known: reward if non-zero, else neutral
    assert "correct" in r["svg_answer_class"].split() and r["svg_answer_fill"] != r["svg_answer_fill_by_value"]


def test_drawing_click_selects_and_fills_the_detail_panel(deep_result: dict) -> None:
    r = deep_result
    tree = deep_tree()
    assert r["svg_nodes"] == 19 and r["draw_truncated"] is False and "all 19 nodes" in r["draw_note"]
    assert r["clicked"] == 1 and r["selected_after_click"] == 1
    assert r["clicked_circle_selected"] is True and r["clicked_row_selected"] is True  # the list follows the drawing
    assert r["detail_title"] == "node #1 · depth 1"
    assert r["detail_action"] == tree.nodes[1].action  # full text, markup kept as text
    assert r["detail_prompt"] == tree.prompt(1)  # rebuilt from the context deltas like Tree.prompt
    for label in ("N visits", "Q mean value", "V critic value", "P prior", "R reward", "critic self_eval", "tokens", "seconds",
                  "terminal", "truncated"):
        assert label in r["detail_text"], label


def test_detail_panel_prompt_of_a_rewritten_history(tmp_path: Path) -> None:
    tree = deep_tree()
    r = selftest(tmp_path, [tree], node=9, q="step 1 of")
    assert r["clicked"] == 9 and r["detail_prompt"] == tree.prompt(9) and tree.prompt(9).startswith("A rewritten history")


def test_search_counts_highlights_and_jumps(deep_result: dict) -> None:
    r = deep_result
    tree = deep_tree()
    expected = [n.id for n in tree.nodes if "of branch 1" in f"{n.action}\n{n.observation or ''}".lower()]
    assert r["search_count"] == len(expected) == 5 and r["search_count_text"] == "1 of 5 matches"
    assert r["search_jump"] == expected[0] and r["search_next"] == expected[1] and r["search_jump_visible"] is True
    assert r["search_circles"] == 5  # matches are marked in the drawing too
    assert r["filter_ok"] is True and r["filter_rows_visible"] == 7  # root, branch 1 and its 5 matching steps


def test_search_without_matches_and_prompt_with_an_observation(tmp_path: Path) -> None:
    tree = deep_tree()
    r = selftest(tmp_path, [tree], q="no such text", node=3)
    assert r["search_count"] == 0 and r["search_count_text"] == "no matches"
    assert r["detail_prompt"] == tree.prompt(3) and tree.nodes[2].observation in r["detail_prompt"]
    assert r["detail_observation"] is None


def test_big_tree_drawing_is_truncated_and_the_list_still_works(tmp_path: Path) -> None:
    r = selftest(tmp_path, [big_tree()], q="candidate 99999")
    assert r["svg_nodes"] == 2000 and r["draw_truncated"] is True
    assert "Drawing truncated: 2,000 of 100,000 nodes drawn" in r["draw_note"]
    assert r["visible_expanded"] == 1 + 200  # 300 root children: one page, then "show more"
    assert r["default_path_rows_visible"] == r["expected_path_rows"] and r["answer_visible"] is True
    assert r["search_count"] == 1 and r["search_jump"] == 99_999  # found although it is not drawn
    assert "wrong" in r["answer_badge_class"].split()
    assert r["ms_to_ready"] < 30_000


def test_expand_url_option(tmp_path: Path) -> None:
    page = tmp_path / "viewer.html"
    write_viewer([deep_tree()], page)
    collapsed = chromium(tmp_path, "--dump-dom", page.as_uri() + "?expand=0")
    assert collapsed.count('class="row') == 1  # only the root
    two = chromium(tmp_path, "--dump-dom", page.as_uri() + "?expand=2")
    assert two.count('class="row') == 1 + 3 + 3  # root, its children, their children
    assert "<title>mcts-agent trees: math (1 tree)</title>" in two and "pwned" not in two.split("</title>")[0]


def test_screenshots(tmp_path: Path) -> None:
    page = tmp_path / "viewer.html"
    write_viewer([deep_tree(), other_verdicts_tree(), wide_tree()], page)
    shots = [screenshot(tmp_path, page, "viewer-default.png"),
             screenshot(tmp_path, page, "viewer-search.png", "?q=" + quote("of branch 1") + "&color=correct")]
    big = tmp_path / "big.html"
    write_viewer([big_tree(20_000)], big)
    shots.append(screenshot(tmp_path, big, "viewer-big.png"))
    assert len({s.read_bytes() for s in shots}) == 3


def test_viewer_shows_the_worlds_observations(tmp_path: Path) -> None:
    """An agent env's tree: each action's observation is on the page (opened on the answer path by default)."""
    from mcts_agent.envs.demo import CounterEnv
    from mcts_agent.llm.scripted import ScriptedBackend
    from mcts_agent.search import SearchConfig, run_search

    env = CounterEnv(n=1, max_steps=4)
    script = lambda p, i: "submit()" if "The counter is" in p else f"add({env.tasks[0].meta['target'] % 9 or 9})"
    tree = run_search(env.tasks, env, ScriptedBackend(script), SearchConfig(algo="greedy"))[0]
    page = tmp_path / "viewer.html"
    write_viewer([tree], page)
    assert tree.nodes[1].observation.startswith("The counter is")
    for url in (page.as_uri(), page.as_uri() + "?expand=path"):
        dom = chromium(tmp_path, "--dump-dom", url)
        assert f"↳ {tree.nodes[1].observation}" in dom and f"↳ {tree.nodes[2].observation}" in dom
    r = selftest(tmp_path, [tree], node=1, q="counter is")
    assert r["detail_observation"] == tree.nodes[1].observation
    if tree.prompt(1) is not None:
        assert r["detail_prompt"] == tree.prompt(1)
    assert r["search_count"] == sum("counter is" in (n.observation or "").lower() for n in tree.nodes)


def test_the_envs_own_verdicts_colour_answers_the_gold_string_would_not(tmp_path: Path) -> None:
    tree = deep_tree()
    tree.nodes[6].answer = "42.0"  # equal to gold "42" by value: the runner's env check says so
    tree.meta["terminal_correct"] = {"6": True, "12": False, "18": True}
    r = selftest(tmp_path, [tree])
    assert r["verdicts"][0] == {"6": "correct", "12": "wrong", "18": "correct"}

"""The offline viewer in a real headless chromium: expand/collapse through the page's own click handlers.

The page has a self-test (``?selftest=1``) that selects the first tree, clicks the root's
toggle, counts visible rows, clicks again, reveals the answer path, collapses all, and writes
the result into the document title, which ``--dump-dom`` shows. Install chromium with
``scripts/install_system_deps.sh``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

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


def selftest(tmp_path: Path, trees: list[Tree]) -> dict:
    page = tmp_path / "viewer.html"
    write_viewer(trees, page, title="browser test")
    dom = chromium(tmp_path, "--dump-dom", page.as_uri() + "?selftest=1")
    m = re.search(r"<title>SELFTEST (PASS|FAIL) (.*?)</title>", dom)
    assert m, f"the self-test did not run; page title: {re.search(r'<title>.*?</title>', dom)}"
    result = json.loads(m.group(2).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"'))
    assert m.group(1) == "PASS", result
    return result


def deep_tree() -> Tree:
    """root with 3 children, each a chain; the answer 6 levels down, step texts that try to break the page."""
    t = Tree(tree_id="deep", task_id="task-deep", question="What </script> is <b>6 * 7</b>?", meta={"correct": True})
    for c in range(3):
        nid = t.add_child(0, action=f"branch {c} </script><script>document.title='pwned'</script>", visits=3).id
        for d in range(5):
            nid = t.add_child(nid, action=f"step {d} of branch {c} 🙂", visits=2, value_sum=1.0).id
        t.nodes[nid].terminal, t.nodes[nid].answer = True, str(40 + c)
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


def test_expand_and_collapse_in_chromium(tmp_path: Path) -> None:
    r = selftest(tmp_path, [deep_tree(), wide_tree()])
    assert r["trees"] == 2
    assert r["visible_before"] == 1 and r["rendered_before"] == 1  # children are rendered lazily
    assert r["visible_expanded"] == 4  # root + its 3 children
    assert r["visible_collapsed"] == 1 and r["rendered_after_collapse"] == 4  # hidden, kept in the DOM
    assert r["path_rows_visible"] == r["expected_path_rows"] == 7 and r["answer_visible"] is True
    assert r["visible_after_collapse_all"] == 1


def test_wide_node_renders_children_in_pages(tmp_path: Path) -> None:
    r = selftest(tmp_path, [wide_tree()])
    assert r["visible_expanded"] == 1 + 200  # one page of children, then a "show more" row
    assert r["path_rows_visible"] == 2 and r["answer_visible"] is True  # revealing clicked "show more" twice


def test_screenshot_renders(tmp_path: Path) -> None:
    page = tmp_path / "viewer.html"
    write_viewer([deep_tree()], page)
    shot = tmp_path / "shot.png"
    chromium(tmp_path, "--window-size=1200,800", "--hide-scrollbars", f"--screenshot={shot}", page.as_uri() + "?expand=path")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_viewer_shows_the_worlds_observations(tmp_path: Path) -> None:
    """An agent env's tree: each action's observation is on the page (answer path expanded)."""
    from mcts_agent.envs.demo import CounterEnv
    from mcts_agent.llm.scripted import ScriptedBackend
    from mcts_agent.search import SearchConfig, run_search

    env = CounterEnv(n=1, max_steps=4)
    script = lambda p, i: "submit()" if "The counter is" in p else f"add({env.tasks[0].meta['target'] % 9 or 9})"
    tree = run_search(env.tasks, env, ScriptedBackend(script), SearchConfig(algo="greedy"))[0]
    page = tmp_path / "viewer.html"
    write_viewer([tree], page)
    dom = chromium(tmp_path, "--dump-dom", page.as_uri() + "?expand=path")
    assert tree.nodes[1].observation.startswith("The counter is")
    assert f"↳ {tree.nodes[1].observation}" in dom and f"↳ {tree.nodes[2].observation}" in dom

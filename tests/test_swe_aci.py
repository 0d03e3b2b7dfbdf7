"""The SWE agent-computer interface: actions parsed exactly, paths kept inside the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcts_agent.envs.swe import aci
from mcts_agent.envs.swe.aci import ActionError, parse_action


@pytest.mark.parametrize("text, name, args", [
    ('view("a.py")', "view", ("a.py",)),
    ('  view("a.py", 3, 9)\n', "view", ("a.py", 3, 9)),
    ("search('def f')", "search", ("def f",)),
    ('search("x", "src")', "search", ("x", "src")),
    ('replace("a.py", """x = 1\n""", "x = 2\\n")', "replace", ("a.py", "x = 1\n", "x = 2\n")),
    ('create("t.py", "")', "create", ("t.py", "")),
    ("run_tests()", "run_tests", ()),
    ('run_tests("tests/a.py", "tests/b.py::t")', "run_tests", ("tests/a.py", "tests/b.py::t")),
    ("submit()", "submit", ()),
    ('```python\nview("a.py")\n```', "view", ("a.py",)),
])
def test_actions_parse(text: str, name: str, args: tuple) -> None:
    a = parse_action(text)
    assert (a.name, a.args) == (name, args)


@pytest.mark.parametrize("text, message", [
    ("", "empty action"),
    ("view a.py", "not a call with literal arguments"),
    ("open('a.py')", "unknown action 'open'"),
    ("view(path='a.py')", "by position, not by keyword"),
    ("view(x)", "arguments must be literal"),
    ("view()", "view() takes 1 to 3 argument(s), got 0"),
    ("submit(1)", "submit() takes 0 argument(s), got 1"),
    ("view('a.py', '3')", "view() argument 2 must be a int"),
    ("view('a.py', True)", "view() argument 2 must be a int"),
    ("replace('a.py', 'x')", "replace() takes 3 argument(s), got 2"),
    ("x = view('a.py')", "not a call with literal arguments"),
    ("view('a.py').strip()", "an action is one call"),
])
def test_malformed_actions_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ActionError) as e:
        parse_action(text)
    assert message in str(e.value)


@pytest.fixture
def repo(tmp_path: Path) -> str:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("".join(f"line {i}\n" for i in range(1, 201)))
    (tmp_path / "pkg" / "twice.py").write_text("x = 1\nx = 1\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("secret\n")
    return str(tmp_path)


def test_view_shows_a_numbered_window(repo: str) -> None:
    out = aci.view(repo, "pkg/mod.py", 10, 12)
    assert out.splitlines() == ["pkg/mod.py (lines 10-12 of 200)", "   10 line 10", "   11 line 11", "   12 line 12",
                                "[lines 13-200 not shown]"]
    assert len(aci.view(repo, "pkg/mod.py").splitlines()) == aci.VIEW_LINES + 2  # header + window + "not shown"
    with pytest.raises(ActionError, match="has 200 lines; start 500 is past the end"):
        aci.view(repo, "pkg/mod.py", 500)
    with pytest.raises(ActionError, match="no file 'nope.py'"):
        aci.view(repo, "nope.py")


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "pkg/../../x", ".git/config", "pkg/.git/x", ""])
def test_paths_stay_inside_the_repository(repo: str, path: str) -> None:
    with pytest.raises(ActionError):
        aci.view(repo, path)


def test_a_symlink_out_of_the_repository_is_refused(repo: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text("host secret\n")
    os.symlink(outside, os.path.join(repo, "pkg", "link.py"))
    with pytest.raises(ActionError, match="leads outside the repository"):
        aci.view(repo, "pkg/link.py")
    with pytest.raises(ActionError, match="leads outside the repository"):
        aci.replace_text(repo, "pkg/link.py", "host", "x")
    assert outside.read_text() == "host secret\n"
    assert aci.search(repo, "host secret") == "no line holds 'host secret'"  # search skips links (and .git)


def test_replace_needs_exactly_one_match(repo: str) -> None:
    with pytest.raises(ActionError, match="occurs 2 times in pkg/twice.py; it must occur exactly once"):
        aci.replace_text(repo, "pkg/twice.py", "x = 1", "x = 2")
    with pytest.raises(ActionError, match="occurs 0 times"):
        aci.replace_text(repo, "pkg/twice.py", "y = 1", "x = 2")
    assert aci.replace_text(repo, "pkg/mod.py", "line 7\n", "seven\n") == "replaced 1 occurrence in pkg/mod.py"
    assert Path(repo, "pkg/mod.py").read_text().splitlines()[6] == "seven"


def test_create_makes_new_files_only(repo: str) -> None:
    assert aci.create(repo, "tests/test_new.py", "def test_x():\n    pass\n") == "created tests/test_new.py (2 lines)"
    with pytest.raises(ActionError, match="exists already"):
        aci.create(repo, "pkg/mod.py", "")


def test_search_caps_its_hits(repo: str) -> None:
    out = aci.search(repo, "line")
    assert out.splitlines()[0] == "pkg/mod.py:1: line 1"
    assert out.endswith(f"[{200 - aci.MAX_HITS} more matches not shown]")
    assert aci.search(repo, "secret") == "no line holds 'secret'"  # .git is never searched
    assert aci.search(repo, "line 150", "pkg/mod.py") == "pkg/mod.py:150: line 150"
    assert aci.search(repo, "zzz") == "no line holds 'zzz'"


def test_cap_marks_the_cut() -> None:
    assert aci.cap("x" * 10, 4) == "xxxx\n[... 6 more characters cut]"

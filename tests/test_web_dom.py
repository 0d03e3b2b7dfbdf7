"""The page as text: rendering, the character bound, the hash, and the snapshot script on static HTML."""

from __future__ import annotations

from typing import Iterator
from urllib.parse import quote

import pytest

from mcts_agent.envs.web.browser import Browser, browser_available
from mcts_agent.envs.web.dom import SNAPSHOT_JS, Element, Snapshot, page_hash, parse_page, render

ELEMENTS = (
    Element(1, 0, "label", 'say "hi"'),
    Element(2, 1, "input", "", {"type": "checkbox", "checked": False, "id": "ch0"}),
    Element(3, 0, "input", "", {"value": "two words", "type": "text", "focused": True}),
    Element(4, 0, "select", "", {"value": "Red"}),
    Element(5, 1, "option", "Red", {"selected": True}),
    Element(6, 1, "option", "Blue", {"selected": False}),
)


def test_render_writes_one_line_per_element_and_parse_page_reads_it_back() -> None:
    text = render(Snapshot("Do it.", ELEMENTS))
    assert text.splitlines() == [
        "Instruction: Do it.",
        "Page:",
        '[1] label "say \\"hi\\""',
        "  [2] input id=ch0 type=checkbox unchecked",
        '[3] input type=text value="two words" focused',
        "[4] select value=Red",
        '  [5] option selected "Red"',
        '  [6] option "Blue"',
    ]
    instruction, parsed = parse_page("noise\n" + text)
    assert instruction == "Do it."
    assert [(e.ref, e.depth, e.tag, e.text) for e in parsed] == [(e.ref, e.depth, e.tag, e.text) for e in ELEMENTS]
    assert parsed[1].attrs == {"id": "ch0", "type": "checkbox", "checked": False}
    assert parsed[2].attrs == {"type": "text", "value": "two words", "focused": True}


def test_the_character_bound_cuts_whole_lines_and_says_how_many_were_left_out() -> None:
    many = tuple(Element(i, 0, "div", f"item number {i}") for i in range(1, 101))
    text = render(Snapshot("Find it.", many), max_chars=200)
    lines = text.splitlines()
    assert lines[-1] == f"... (truncated: {100 - (len(lines) - 3)} more elements)"
    assert sum(len(line) + 1 for line in lines[2:-1]) <= 200
    assert render(Snapshot("Nothing here.", ())).endswith("Page:\n(no elements)")


def test_the_hash_sees_every_element_even_past_the_bound() -> None:
    many = tuple(Element(i, 0, "div", f"item {i}") for i in range(1, 101))
    changed = many[:-1] + (Element(100, 0, "div", "item changed"),)
    assert render(Snapshot("x", many), 200) == render(Snapshot("x", changed), 200)
    assert page_hash(Snapshot("x", many)) != page_hash(Snapshot("x", changed))
    assert page_hash(Snapshot("x", many)) == page_hash(Snapshot("x", tuple(many)))
    assert page_hash(Snapshot("x", many)) != page_hash(Snapshot("x", many, done=True, raw_reward=1.0))


PAGE = """<html><body>
<div id="wrap"><div id="query">ignored: the instruction comes from core.getUtterance</div>
<div><div><button id="go">Go <b>now</b></button></div></div>
<p style="display:none"><button>hidden</button></p>
<span style="visibility:hidden">invisible</span>
<label><input type="checkbox" id="c1" checked>Apples</label>
<select id="s"><option>Red</option><option selected>Blue</option></select>
<input type="text" value="typed" placeholder="name">
<textarea>draft</textarea>
<a href="#x">a link</a>
<script>var secret = 1;</script>
</div></body></html>"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = browser_available()
    if reason:
        pytest.skip(reason)
    with Browser() as b:
        yield b


@pytest.mark.browser
def test_the_snapshot_script_on_static_html(browser: Browser) -> None:
    driver = browser.driver
    driver.get("data:text/html;charset=utf-8," + quote(PAGE))
    first = Snapshot.from_js(driver.execute_script(SNAPSHOT_JS))
    lines = render(first).splitlines()[2:]
    assert lines == [
        '[1] button id=go "Go"',
        '  [2] b "now"',
        '[3] label "Apples"',
        "  [4] input id=c1 type=checkbox checked",
        "[5] select id=s value=Blue",
        '  [6] option "Red"',
        '  [7] option selected "Blue"',
        "[8] input type=text value=typed placeholder=name",
        "[9] textarea value=draft",
        '[10] a href=#x "a link"',
    ]
    assert first.instruction == "" and not first.done  # not a MiniWoB page: no core, no episode
    driver.execute_script("document.getElementById('c1').click();"
                          "var b = document.createElement('button'); b.textContent = 'new';"
                          "document.body.insertBefore(b, document.body.firstChild);")
    second = Snapshot.from_js(driver.execute_script(SNAPSHOT_JS))
    assert render(second).splitlines()[2] == '[11] button "new"'  # a new element gets the next ref ...
    assert render(second).splitlines()[6] == "  [4] input id=c1 type=checkbox unchecked"  # ... old ones keep theirs
    assert second.hash() != first.hash()

"""The web agent's action language, parsed exactly.

One action per turn, the whole turn (surrounding whitespace aside):

* ``click(REF)``: click the element ``[REF]`` of the latest observation;
* ``type(REF, "TEXT")``: clear the input or textarea ``[REF]`` and type TEXT into it;
* ``select(REF, "OPTION")``: choose the option whose visible text is OPTION in the select ``[REF]``;
* ``press("KEY")``: press KEY (one of ``KEYS``) on the focused element.

REF is a decimal integer; TEXT, OPTION and KEY are JSON string literals (double quotes,
backslash escapes). Anything else raises ``ActionError`` with a message meant for the policy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

KEYS = ("Enter", "Tab", "Escape", "Backspace", "Delete", "Space", "ArrowUp", "ArrowDown", "ArrowLeft",
        "ArrowRight", "Home", "End", "PageUp", "PageDown")
KINDS = ("click", "type", "select", "press")
MAX_TEXT = 500
SYNTAX = 'click(ref), type(ref, "text"), select(ref, "option") or press("Key")'
HELP = (
    "Reply with exactly one action per turn, nothing else:\n"
    "- click(ref): click element [ref], e.g. click(12)\n"
    '- type(ref, "text"): replace the text of input [ref], e.g. type(7, "hello")\n'
    '- select(ref, "option"): choose an option of a select list, e.g. select(4, "Red")\n'
    f'- press("Key"): press a key on the focused element, Key one of {", ".join(KEYS)}\n'
    "Refs are the numbers in brackets in the latest page."
)

_STR = r'"(?:[^"\\\x00-\x1f]|\\.)*"'
_PATTERNS = {
    "click": re.compile(r"click\(\s*(\d+)\s*\)"),
    "type": re.compile(rf"type\(\s*(\d+)\s*,\s*({_STR})\s*\)", re.S),
    "select": re.compile(rf"select\(\s*(\d+)\s*,\s*({_STR})\s*\)", re.S),
    "press": re.compile(rf"press\(\s*({_STR})\s*\)", re.S),
}


class ActionError(ValueError):
    """An action that is not in the language; the message is shown to the policy."""


@dataclass(frozen=True)
class Action:
    """A parsed action: ``kind`` with the element ``ref`` and/or its ``text`` argument."""

    kind: str
    ref: int | None = None
    text: str | None = None

    def __str__(self) -> str:
        args = [str(self.ref)] if self.ref is not None else []
        if self.text is not None:
            args.append(json.dumps(self.text, ensure_ascii=False))
        return f"{self.kind}({', '.join(args)})"


def _clip(action: str) -> str:
    a = action.strip()
    return repr(a if len(a) <= 80 else a[:80] + "...")


def parse_action(action: str) -> Action:
    """The ``Action`` that ``action`` spells; ``ActionError`` naming what was expected otherwise."""
    if not isinstance(action, str):
        raise ActionError(f"an action must be a string, got {type(action).__name__}")
    text = action.strip()
    name = text.split("(", 1)[0].strip()
    pattern = _PATTERNS.get(name)
    m = pattern.fullmatch(text) if pattern else None
    if m is None:
        expected = SYNTAX if pattern is None else _usage(name)
        raise ActionError(f"cannot parse action {_clip(action)}; expected {expected}")
    if name == "press":
        key = json.loads(m.group(1))
        if key not in KEYS:
            raise ActionError(f"unknown key {key!r} in press(); expected one of {', '.join(KEYS)}")
        return Action("press", text=key)
    ref = int(m.group(1))
    if name == "click":
        return Action("click", ref=ref)
    arg = json.loads(m.group(2))
    if len(arg) > MAX_TEXT:
        raise ActionError(f"the text of {name}() has {len(arg)} characters; at most {MAX_TEXT} are allowed")
    return Action(name, ref=ref, text=arg)


def _usage(name: str) -> str:
    return {"click": "click(ref) with ref a number, e.g. click(12)",
            "type": 'type(ref, "text") with a double-quoted text, e.g. type(7, "hello")',
            "select": 'select(ref, "option") with a double-quoted option, e.g. select(4, "Red")',
            "press": f'press("Key") with Key one of {", ".join(KEYS)}'}[name]

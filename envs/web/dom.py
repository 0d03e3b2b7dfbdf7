"""The page as text: a DOM snapshot flattened to one line per element, with element references.

``SNAPSHOT_JS`` runs in the page (one WebDriver call) and returns the task's instruction, the
episode's status (MiniWoB's ``WOB_DONE_GLOBAL`` and raw reward) and every rendered element worth
showing: form controls, links, buttons, labels, options, elements with a ``role``, and anything
with text of its own. Each gets a ref (``data-mref``), kept for the element's lifetime and
numbered in document order of first sight, so the same page reached by the same calls has the
same refs (``RESET_REFS_JS`` starts them again at each episode). Pure wrappers are skipped;
indentation shows nesting among the elements shown.

``render`` writes them as ``[ref] tag attr=value "text"`` lines under a character bound (the
cut is marked with how many elements were left out); ``page_hash`` fingerprints the whole,
untruncated snapshot, which replay compares against what the tree recorded.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

MAX_CHARS = 3000  # default bound of the page part of an observation (~750-1000 tokens)
MAX_TEXT = 120  # characters of one element's own text
MAX_INSTRUCTION = 600
REF_ATTR = "data-mref"
_BARE = re.compile(r"^[^\s\"'=\[\]]+$")

RESET_REFS_JS = f"""
window.__mctsRef = 0;
document.querySelectorAll('[{REF_ATTR}]').forEach(function (e) {{ e.removeAttribute('{REF_ATTR}'); }});
"""

SNAPSHOT_JS = f"""
var SKIP = {{'reward-display': 1, 'sync-task-cover': 1, 'click-canvas': 1, 'query': 1}};
var KEEP = {{A: 1, BUTTON: 1, INPUT: 1, SELECT: 1, OPTION: 1, TEXTAREA: 1, LABEL: 1, IMG: 1}};
if (window.__mctsRef === undefined) window.__mctsRef = 0;
var out = [];
function ownText(el) {{
  var parts = [];
  el.childNodes.forEach(function (c) {{
    if (c.nodeType === 3) {{ var t = c.data.replace(/\\s+/g, ' ').trim(); if (t) parts.push(t); }}
  }});
  return parts.join(' ').slice(0, {MAX_TEXT});
}}
function attrs(el, tag) {{
  var a = {{}};
  if (el.id) a.id = el.id;
  var role = el.getAttribute('role'); if (role) a.role = role;
  if (tag === 'input') {{
    a.type = (el.type || 'text').toLowerCase();
    if (a.type === 'checkbox' || a.type === 'radio') a.checked = el.checked; else a.value = el.value;
    if (el.placeholder) a.placeholder = el.placeholder;
  }} else if (tag === 'textarea') {{ a.value = el.value;
  }} else if (tag === 'select') {{ var o = el.options[el.selectedIndex]; a.value = o ? o.text : '';
  }} else if (tag === 'option') {{ a.selected = el.selected;
  }} else if (tag === 'a' && el.getAttribute('href')) {{ a.href = el.getAttribute('href');
  }} else if (tag === 'img' && el.getAttribute('alt')) {{ a.alt = el.getAttribute('alt'); }}
  if (el.disabled) a.disabled = true;
  if (document.activeElement === el && el !== document.body) a.focused = true;
  return a;
}}
function walk(el, depth) {{
  if (SKIP[el.id]) return;
  var tag = el.tagName;
  var style = window.getComputedStyle(el);
  if (style.display === 'none' && tag !== 'OPTION') return;
  if (tag === 'SCRIPT' || tag === 'STYLE' || tag === 'NOSCRIPT' || tag === 'TEMPLATE') return;
  var text = tag === 'TEXTAREA' ? '' : ownText(el);
  var rendered = tag === 'OPTION' || (style.visibility !== 'hidden' && el.getClientRects().length > 0);
  var show = rendered && (KEEP[tag] || text || el.getAttribute('role'));
  var next = depth;
  if (show) {{
    var ref = el.getAttribute('{REF_ATTR}');
    if (ref === null) {{ ref = String(++window.__mctsRef); el.setAttribute('{REF_ATTR}', ref); }}
    var low = tag.toLowerCase();
    out.push([depth, +ref, low, text, attrs(el, low)]);
    next = depth + 1;
  }}
  for (var i = 0; i < el.children.length; i++) walk(el.children[i], next);
}}
walk(document.body, 0);
var utterance = '';
if (window.core && core.getUtterance) {{
  var u = core.getUtterance();
  utterance = typeof u === 'string' ? u : (u && u.utterance) || '';
}}
var wob = typeof WOB_DONE_GLOBAL !== 'undefined';
return {{utterance: utterance, elements: out, done: wob ? !!WOB_DONE_GLOBAL : false,
         raw_reward: wob ? WOB_RAW_REWARD_GLOBAL : 0, reason: wob ? WOB_REWARD_REASON : null}};
"""


@dataclass(frozen=True)
class Element:
    """One element shown to the policy."""

    ref: int
    depth: int
    tag: str
    text: str = ""
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """What ``SNAPSHOT_JS`` saw: instruction, elements and the episode's status."""

    instruction: str
    elements: tuple[Element, ...]
    done: bool = False
    raw_reward: float = 0.0
    reason: Any = None

    @classmethod
    def from_js(cls, raw: Mapping[str, Any]) -> "Snapshot":
        els = tuple(Element(ref=int(r), depth=int(d), tag=str(t), text=str(x), attrs=dict(a or {}))
                    for d, r, t, x, a in raw.get("elements") or ())
        return cls(instruction=str(raw.get("utterance") or ""), elements=els, done=bool(raw.get("done")),
                   raw_reward=float(raw.get("raw_reward") or 0.0), reason=raw.get("reason"))

    def refs(self) -> set[int]:
        return {e.ref for e in self.elements}

    def hash(self) -> str:
        return page_hash(self)


def _value(v: Any) -> str:
    s = str(v)
    return s if _BARE.match(s) else json.dumps(s, ensure_ascii=False)


ATTR_ORDER = ("id", "role", "type", "value", "checked", "selected", "placeholder", "href", "alt", "disabled", "focused")


def render_element(e: Element) -> str:
    """``[ref] tag attr=value flag "text"`` indented by nesting depth (a checkbox is ``checked`` or ``unchecked``)."""
    parts = [f"{'  ' * e.depth}[{e.ref}] {e.tag}"]
    keys = [k for k in ATTR_ORDER if k in e.attrs] + sorted(k for k in e.attrs if k not in ATTR_ORDER)
    for k in keys:
        v = e.attrs[k]
        if k == "checked":
            parts.append("checked" if v else "unchecked")
        elif v is True:
            parts.append(k)
        elif v is not False and v is not None:
            parts.append(f"{k}={_value(v)}")
    if e.text:
        parts.append(json.dumps(e.text, ensure_ascii=False))
    return " ".join(parts)


_LINE = re.compile(r"^(?P<indent> *)\[(?P<ref>\d+)\] (?P<tag>[a-z][a-z0-9-]*)(?P<rest>.*)$")
_TOKEN = re.compile(r'\s+(?:(?P<key>[a-z][\w-]*)=(?P<val>"(?:[^"\\]|\\.)*"|\S+)|(?P<text>"(?:[^"\\]|\\.)*")|(?P<flag>[a-z][\w-]*))')


def parse_page(text: str) -> tuple[str, list[Element]]:
    """The instruction and elements of an observation written by ``render`` (its inverse, for scripted agents)."""
    instruction, elements = "", []
    for line in text.splitlines():
        if line.startswith("Instruction: "):
            instruction, elements = line[len("Instruction: "):], []
            continue
        m = _LINE.match(line)
        if m is None:
            continue
        attrs: dict[str, Any] = {}
        body = ""
        for t in _TOKEN.finditer(m.group("rest")):
            if t.group("key"):
                v = t.group("val")
                attrs[t.group("key")] = json.loads(v) if v.startswith('"') else v
            elif t.group("text"):
                body = json.loads(t.group("text"))
            elif t.group("flag") in ("checked", "unchecked"):
                attrs["checked"] = t.group("flag") == "checked"
            else:
                attrs[t.group("flag")] = True
        elements.append(Element(int(m.group("ref")), len(m.group("indent")) // 2, m.group("tag"), body, attrs))
    return instruction, elements


def render(snapshot: Snapshot, max_chars: int = MAX_CHARS) -> str:
    """The observation text: the instruction, then the page's elements within ``max_chars`` characters."""
    instruction = snapshot.instruction
    if len(instruction) > MAX_INSTRUCTION:
        instruction = instruction[:MAX_INSTRUCTION] + " ..."
    lines = [f"Instruction: {instruction}", "Page:"]
    used = 0
    for i, e in enumerate(snapshot.elements):
        line = render_element(e)
        if used + len(line) + 1 > max_chars:
            lines.append(f"... (truncated: {len(snapshot.elements) - i} more elements)")
            break
        lines.append(line)
        used += len(line) + 1
    if not snapshot.elements:
        lines.append("(no elements)")
    return "\n".join(lines)


def page_hash(snapshot: Snapshot) -> str:
    """A short fingerprint of the whole snapshot (instruction, every element, status)."""
    doc = [snapshot.instruction, snapshot.done, snapshot.raw_reward,
           [[e.ref, e.depth, e.tag, e.text, sorted(e.attrs.items())] for e in snapshot.elements]]
    return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode()).hexdigest()[:16]

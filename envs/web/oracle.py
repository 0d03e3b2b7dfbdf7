"""Scripted MiniWoB++ agents, written by hand per task, that act from the observation text alone.

Each reads the instruction and the ``[ref] tag ...`` lines of the latest observation (parsed back
by ``dom.parse_page``) and, where a task needs it, how many actions it already took; the task's
own reward judges them. They prove the harness (observation, actions, replay, reward) end to end:
on their tasks they must solve every seed.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from mcts_agent.env import Task
from mcts_agent.envs.web.dom import Element, parse_page
from mcts_agent.errors import EnvError

Agent = Callable[[str, list[Element], int], str]  # (instruction, elements, actions taken) -> action
_QUOTED = re.compile(r'"([^"]*)"')


def _find(elements: list[Element], tag: str | tuple[str, ...], text: str | None = None) -> Element:
    tags = (tag,) if isinstance(tag, str) else tag
    for e in elements:
        if e.tag in tags and (text is None or e.text == text):
            return e
    raise EnvError(f"oracle: no {'/'.join(tags)} with text {text!r} on the page")


def _children(elements: list[Element], parent: Element) -> list[Element]:
    i = elements.index(parent) + 1
    out = []
    while i < len(elements) and elements[i].depth > parent.depth:
        out.append(elements[i])
        i += 1
    return out


def _submit(elements: list[Element]) -> str:
    return f"click({_find(elements, 'button', 'Submit').ref})"


def click_button(instruction: str, els: list[Element], taken: int) -> str:
    return f"click({_find(els, 'button', _QUOTED.findall(instruction)[0]).ref})"


def click_link(instruction: str, els: list[Element], taken: int) -> str:
    return f"click({_find(els, ('span', 'a'), _QUOTED.findall(instruction)[0]).ref})"


def _toggle_boxes(els: list[Element], wanted: set[str]) -> str:
    for label in (e for e in els if e.tag == "label"):
        box = next(c for c in _children(els, label) if c.tag == "input")
        if bool(box.attrs.get("checked")) != (label.text in wanted):
            return f"click({box.ref})"
    return _submit(els)


def click_checkboxes(instruction: str, els: list[Element], taken: int) -> str:
    listed = instruction.removeprefix("Select ").removesuffix(" and click Submit.")
    return _toggle_boxes(els, set() if listed == "nothing" else set(listed.split(", ")))


def click_option(instruction: str, els: list[Element], taken: int) -> str:
    return _toggle_boxes(els, {instruction.removeprefix("Select ").removesuffix(" and click Submit.")})


def choose_list(instruction: str, els: list[Element], taken: int) -> str:
    want = instruction.removeprefix("Select ").removesuffix(" from the list and click Submit.")
    sel = _find(els, "select")
    return _submit(els) if sel.attrs.get("value") == want else f'select({sel.ref}, "{want}")'


def _fill(els: list[Element], values: dict[str, str], button: str) -> str:
    for e in els:
        if e.tag == "input" and e.attrs.get("id") in values and e.attrs.get("value") != values[e.attrs["id"]]:
            return f'type({e.ref}, "{values[e.attrs["id"]]}")'
    return f"click({_find(els, 'button', button).ref})"


def enter_text(instruction: str, els: list[Element], taken: int) -> str:
    return _fill(els, {"tt": _QUOTED.findall(instruction)[0]}, "Submit")


def login_user(instruction: str, els: list[Element], taken: int) -> str:
    user, password = _QUOTED.findall(instruction)[:2]
    return _fill(els, {"username": user, "password": password}, "Login")


def click_dialog(instruction: str, els: list[Element], taken: int) -> str:
    return f"click({_find(els, 'button', 'Close').ref})"


def click_tab(instruction: str, els: list[Element], taken: int) -> str:
    tab = re.search(r"Tab #\d+", instruction)
    assert tab is not None
    return f"click({_find(els, 'a', tab.group(0)).ref})"


def click_button_sequence(instruction: str, els: list[Element], taken: int) -> str:
    return f"click({_find(els, 'button', 'ONE' if taken == 0 else 'TWO').ref})"


ORACLES: dict[str, Agent] = {
    "click-button": click_button, "click-link": click_link, "click-checkboxes": click_checkboxes,
    "click-option": click_option, "choose-list": choose_list, "enter-text": enter_text, "login-user": login_user,
    "click-dialog": click_dialog, "click-tab": click_tab, "click-button-sequence": click_button_sequence,
}


def oracle_action(task_name: str, observation: str, taken: int = 0) -> str:
    """The scripted agent's next action on page text ``observation`` after ``taken`` actions."""
    if task_name not in ORACLES:
        raise EnvError(f"no scripted oracle for MiniWoB++ task {task_name!r}; oracles exist for {sorted(ORACLES)}")
    instruction, elements = parse_page(observation)
    return ORACLES[task_name](instruction, elements, taken)


def oracle_script(tasks: Sequence[Task]) -> Callable[[str, int], str]:
    """A policy for ``ScriptedBackend`` (template-free chat): the task is the one whose first page is in
    the prompt; the page is the prompt's latest observation; actions taken are the assistant turns since."""
    names = {t.question: str(t.meta["task"]) for t in tasks}

    def script(prompt: str, i: int) -> str:
        question = next(q for q in names if q in prompt)
        after = prompt[prompt.index(question):]
        taken = after.count("\nAssistant: ") - 1
        return oracle_action(names[question], after[after.rindex("Instruction: "):], taken)

    return script


def exploring_script(tasks: Sequence[Task]) -> Callable[[str, int], str]:
    """Like ``oracle_script`` for sample 0; sample ``i > 0`` clicks ``[i + 1]`` instead (branches for search)."""
    oracle = oracle_script(tasks)
    return lambda prompt, i: oracle(prompt, 0) if i == 0 else f"click({i + 1})"

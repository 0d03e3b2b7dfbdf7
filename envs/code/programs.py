"""Turning policy text into code, and code plus tests into one program for the sandbox."""

from __future__ import annotations

import ast
import doctest
import re

FENCE = "```"
_ASSERT_CALL = re.compile(r"^\s*assert\s+(?:not\s+)?\(?\s*(?:math\.isclose\(|set\(|sorted\()?\s*([A-Za-z_]\w*)\s*\(")


def cut_at_fence(text: str) -> str:
    """The code in ``text``: a leading ```python line is dropped, a closing ``` ends the code."""
    lines = text.split("\n")
    if lines and lines[0].strip().startswith(FENCE):
        lines = lines[1:]
    code = "\n".join(lines)
    return code.split(FENCE, 1)[0]


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def defines(code: str, name: str) -> bool:
    """Whether ``code`` parses on its own and defines function ``name`` at top level."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def body_indent(prompt: str) -> str:
    """The indentation of a function body that continues ``prompt`` (its last non-blank line)."""
    for line in reversed(prompt.splitlines()):
        if line.strip():
            return line[: len(line) - len(line.lstrip())] or "    "
    return "    "


def reindent_body(body: str, indent: str) -> str:
    """Repair a function body whose leading indentation was stripped.

    All lines flush left: indent every line. Only the first line flush left (a stripped
    step): indent that line. A correctly indented body is returned unchanged.
    """
    lines = body.split("\n")
    code_lines = [ln for ln in lines if ln.strip()]
    if not code_lines or code_lines[0][:1] in (" ", "\t"):
        return body
    if all(ln[:1] not in (" ", "\t") for ln in code_lines):
        return "\n".join(indent + ln if ln.strip() else ln for ln in lines)
    first = next(i for i, ln in enumerate(lines) if ln.strip())
    lines[first] = indent + lines[first]
    return "\n".join(lines)


def complete_function(prompt: str, completion: str, entry_point: str) -> str:
    """Source that defines ``entry_point``, from a prompt (signature + docstring) and the
    policy's completion: either the body that continues the prompt, or a whole function."""
    if defines(completion, entry_point):
        return prompt + "\n\n" + completion  # a full definition replaces the prompt's stub
    return prompt + reindent_body(completion, body_indent(prompt))


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """Exactly the program HumanEval's reference harness executes for one sample."""
    return prompt + completion + "\n" + test + "\n" + f"check({entry_point})"


def doctest_asserts(prompt: str) -> list[str]:
    """``assert <call> == <expected>`` for each ``>>>`` example in a docstring whose expected
    output is a Python expression (HumanEval's visible examples)."""
    try:
        examples = doctest.DocTestParser().get_examples(prompt)
    except ValueError:
        return []
    asserts = []
    for ex in examples:
        source, want = ex.source.strip(), ex.want.strip()
        if not want or "\n" in source or not _is_expression(source) or not _is_expression(want):
            continue
        asserts.append(f"assert ({source}) == ({want})")
    return asserts


def _is_expression(text: str) -> bool:
    try:
        ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    return True


def called_function(test: str) -> str | None:
    """The function an ``assert f(...) == ...`` test calls, e.g. MBPP's entry point."""
    m = _ASSERT_CALL.match(test)
    return m.group(1) if m else None

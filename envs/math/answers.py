"""Final-answer extraction and checking for math environments.

Extraction finds the answer a model gave ("The answer is 18.", "#### 18", ``\\boxed{18}``);
checking compares it with the gold answer by value, with math-verify (``parse`` +
``verify``) and a restricted sympy fallback, never by string equality. Every function
here takes untrusted model text and never raises on it: bad input gives ``None``/``False``.
"""

from __future__ import annotations

import functools
import re
import signal
import threading
import time
from typing import Any, Callable, TypeVar

__all__ = ["find_boxed", "find_final", "extract_number", "is_equivalent"]

MAX_ANSWER_CHARS = 300  # longer "answers" are not compared (they are prose, not values)
_TIMEOUT_S = 5  # per math-verify call, where a timer can be used (main thread)

# A number as people write it: -1,234.50, .5, 3/4 (thousands commas only in groups of 3).
_NUM = r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUM})(?:\s*/\s*\d+)?(?!\d)")
_FINAL_RE = re.compile(
    r"\bthe\s+(?:final\s+)?answer\s+is\b\s*:?|^\s*(?:\**\s*)?(?:final\s+)?answer\s*\**\s*:|####",
    re.IGNORECASE | re.MULTILINE,
)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*")

T = TypeVar("T")


# ----- extraction -------------------------------------------------------------------
def find_boxed(text: Any) -> str | None:
    r"""Contents of the last ``\boxed{...}`` (nested braces allowed); None if there is none."""
    if not isinstance(text, str):
        return None
    found = None
    for m in _BOXED_RE.finditer(text):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    found = text[i + 1:j]
                    break
        elif i < len(text) and m.group().endswith(" "):  # "\boxed 5"
            tok = re.match(r"[^\s$.,;]+", text[i:])
            found = tok.group() if tok else found
    return found.strip() if found is not None else None


def find_final(text: Any) -> str | None:
    """The text of the final answer in ``text``, else None.

    Looks for ``\\boxed{}`` first, then the last "The answer is ...", "Final answer: ...",
    or "#### ..." (rest of that line, without a sentence-final period).
    """
    if not isinstance(text, str):
        return None
    boxed = find_boxed(text)
    if boxed is not None:
        return boxed
    last = None
    for last in _FINAL_RE.finditer(text):
        pass
    if last is None:
        return None
    seg = text[last.end():].split("\n", 1)[0].strip().strip("*").strip()
    seg = re.sub(r"(?<!\d)\.+$|\.$", "", seg).strip()  # "18." -> "18", "3.5" stays
    return seg or None


def extract_number(text: Any) -> str | None:
    """The numeric value in an answer segment, normalized: "$1,234.50" -> "1234.50".

    With an equation ("2 + 3 = 5") the number after the last "=" is taken; otherwise the
    first number. Currency signs, thousands commas and a trailing "%" are dropped.
    """
    if not isinstance(text, str):
        return None
    text = text.replace("\\$", "").replace("$", "").replace("\\!", "").replace("{,}", ",")
    text = re.sub(r"\\d?frac\{(-?\d+)\}\{(\d+)\}", r"\1/\2", text)
    if "=" in text:
        text = text.rsplit("=", 1)[1]
    m = _NUMBER_RE.search(text)
    if m is None:
        return None
    return re.sub(r"[,\s]", "", m.group())


# ----- checking ---------------------------------------------------------------------
def is_equivalent(pred: Any, gold: Any) -> bool:
    """Whether answer ``pred`` has the same mathematical value as ``gold``.

    Uses math-verify (latex and plain expressions), then a sympy check restricted to
    arithmetic on numbers. Garbage, empty or oversized input gives False, never an error.
    """
    if not (isinstance(pred, str) and isinstance(gold, str)):
        return False
    pred, gold = pred.strip(), gold.strip()
    if not pred or not gold or len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    if _too_costly(pred) or _too_costly(gold):
        return False
    try:
        p, g = _mv_parse(pred), _mv_parse(gold)
        if p and g:
            return _bounded(lambda t: _mv_verify(g, p, t), default=False)
        return _sympy_equal(pred, gold)
    except Exception:  # noqa: BLE001 - a checker must answer, not crash the search
        return False


@functools.lru_cache(maxsize=8192)
def _mv_parse(s: str) -> tuple[Any, ...]:
    """math-verify's parse of ``s`` as latex (boxed), else as a plain expression."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    def run(t: int | None) -> tuple[Any, ...]:
        latex = parse("\\boxed{" + s + "}", extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
                      fallback_mode="no_fallback", parsing_timeout=t)
        if latex:
            return tuple(latex)
        return tuple(parse(s, extraction_config=[ExprExtractionConfig()], fallback_mode="no_fallback",
                           parsing_timeout=t))

    return _bounded(run, default=())


def _mv_verify(gold: tuple[Any, ...], pred: tuple[Any, ...], t: int | None) -> bool:
    from math_verify import verify

    return bool(verify(list(gold), list(pred), timeout_seconds=t))


_ARITH_RE = re.compile(r"^[\d\s+\-*/^().]+$")


def _sympy_equal(pred: str, gold: str) -> bool:
    """Fallback: both sides as plain arithmetic (digits and + - * / ^ only), compared in sympy.

    Only digit-and-operator strings reach sympy's parser, so no model text is evaluated.
    """
    import sympy
    from sympy.parsing.sympy_parser import convert_xor, parse_expr, standard_transformations

    def value(s: str) -> Any:
        s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s.replace("$", "").replace("\\", ""))
        s = re.sub(r"(\d(?:\.\d+)?)\s*%", r"(\1/100)", s)
        if not _ARITH_RE.match(s):
            return None
        return parse_expr(s, transformations=standard_transformations + (convert_xor,), evaluate=True)

    a, b = value(pred), value(gold)
    if a is None or b is None:
        return False
    diff = sympy.nsimplify(a - b)
    return bool(diff == 0 or abs(float(diff)) <= 1e-9 * max(1.0, abs(float(b))))


def _too_costly(s: str) -> bool:
    """Power towers or huge exponents/factorials (9^9^9, 10^{100000}, 99999!) that hang sympy."""
    for m in re.finditer(r"\^|\*\*", s):
        operand, end = _operand(s, m.end())
        if "^" in operand or "**" in operand or len(re.sub(r"\D", "", operand)) > 5:
            return True
        if re.match(r"\s*(?:\^|\*\*)", s[end:]):
            return True  # a^b^c
    return bool(re.search(r"\d{5,}\s*!", s))


def _operand(s: str, i: int) -> tuple[str, int]:
    """The exponent starting at ``s[i]`` (a braced/parenthesized group or a token) and its end."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i < len(s) and s[i] in "{(":
        close, depth = {"{": "}", "(": ")"}[s[i]], 0
        for j in range(i, len(s)):
            depth += 1 if s[j] == s[i] else -1 if s[j] == close else 0
            if depth == 0:
                return s[i + 1:j], j + 1
        return s[i + 1:], len(s)
    m = re.match(r"[-+]?[\w.\\]*", s[i:])
    return m.group(), i + m.end()


def _bounded(fn: Callable[[int | None], T], default: T) -> T:
    """Run a math-verify call with its SIGALRM timeout where that is possible.

    math-verify's timer only works in the main thread, and it cancels any timer the
    caller had running (pytest-timeout, a CLI deadline); we re-arm that timer afterwards.
    Elsewhere the call runs without a timer, protected by ``_too_costly`` and the length cap.
    """
    if threading.current_thread() is not threading.main_thread():
        return fn(None)
    outer_left, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    t0 = time.monotonic()
    from math_verify.errors import TimeoutException  # a BaseException

    try:
        return fn(_TIMEOUT_S)
    except (Exception, TimeoutException):  # noqa: BLE001 - a checker answers, never crashes
        return default
    finally:
        if outer_left > 0:
            left = max(outer_left - (time.monotonic() - t0), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, outer_interval)

"""Final-answer extraction and checking for math environments.

Extraction finds the answer a model gave ("The answer is 18.", "#### 18", ``\\boxed{18}``);
``normalize_numeric`` is the one reading of a numeric answer ("1,000 dollars" -> "1000",
"\u22125" -> "-5", "7 or 8" -> None) that every math env uses for extraction and checking.
Checking compares values with math-verify (``parse`` + ``verify``) and a restricted sympy
fallback, never by string equality. Every function here takes untrusted model text and
never raises on it: bad input gives ``None``/``False``. Only the standard library is
imported at module level (benchmarks load this file on its own).
"""

from __future__ import annotations

import functools
import re
import signal
import threading
import time
import unicodedata
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, NamedTuple, TypeVar

__all__ = ["find_boxed", "find_final", "normalize_numeric", "extract_number", "answer_value", "is_equivalent",
           "numeric_equivalent", "boxed_equivalent"]

MAX_ANSWER_CHARS = 300  # longer "answers" are not compared (they are prose, not values)
_TIMEOUT_S = 5  # per math-verify call, where a timer can be used (main thread)

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


# ----- numeric normalisation ----------------------------------------------------------
class _Reading(NamedTuple):
    """What ``_read`` made of a text: its number (canonical string) or None, and why not."""

    value: str | None
    ambiguous: bool = False  # alternatives, a range, a bound: "7 or 8", "10-15", "more than 5"
    plain: bool = False  # nothing but the number (sign, currency, separators, "%" allowed)
    dash_range: bool = False  # ambiguous only as "10-15" (in LaTeX math that is a subtraction)


_NOTHING = _Reading(None)
_AMBIGUOUS = _Reading(None, ambiguous=True)

_SUPERSCRIPT_RE = re.compile("[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+")
_SUPERSCRIPTS = str.maketrans("\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079", "0123456789")
_VULGAR_RE = re.compile("(\\d?)[ \t]*([\u00bc-\u00be\u2150-\u215e])")  # "2½" -> "2 1/2"
_CHARS = str.maketrans({**dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d", "-"),
                        "\u2044": "/", "\u2215": "/", "\u00d7": "*", "\u22c5": "*", "\u2217": "*", "\u00b7": "*",
                        "\u200b": "", "\u2060": "", "\ufeff": "", "`": " "})
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*([\d.,]+)\s*\}")
_FRAC_SHORT_RE = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")  # \frac12
_LATEX_OPS = {"cdot": "*", "times": "*", "ast": "*", "div": "\u00f7", "pm": "\u00b1", "mp": "\u00b1",
              "approx": "\u2248", "sim": "\u2248", "simeq": "\u2248", "neq": "\u2260", "ne": "\u2260",
              "leq": "\u2264", "le": "\u2264", "leqslant": "\u2264", "geq": "\u2265", "ge": "\u2265",
              "geqslant": "\u2265", "lt": "<", "gt": ">"}
_LATEX_OP_RE = re.compile(r"\\(" + "|".join(sorted(_LATEX_OPS, key=len, reverse=True)) + r")(?![A-Za-z])")
_CURRENCY_RE = re.compile("([-+]?)\\s*(?:[A-Z]{1,2}\\$|\\$|[\u20ac\u00a3\u00a5\u20b9\u20a9])\\s*")  # -$5 -> -5
# Not a plain number: roots, logs, pi, infinity ("2\pi" is no "2").
_NOT_A_NUMBER_RE = re.compile("[\u221a\u221b\u221c\u03c0\u221e\u2211\u220f\u222b]|"
                              r"\b(?:sqrt|cbrt|log|ln|exp|sin|cos|tan|pi|inf|infinity|undefined)\b", re.I)
# Not one value: a sign choice, a bound.
_INEXACT_RE = re.compile("\u00b1|[<>\u2264\u2265\u2260]|"
                         r"\b(?:more|less|fewer|greater|larger|smaller|bigger)\s+than\b|\bat\s+(?:least|most)\b|"
                         r"\bup\s+to\b|\bor\s+(?:more|less|fewer|so)\b", re.I)
_ALTERNATIVE_RHS_RE = re.compile(r"[\d%]\s*\bor\b", re.I)  # two equations: "x = 5 or x = 6"
_MIXED_RE = re.compile(r"(?<![\w.,/])([-+]?)(\d+)[ \t]+([1-9]\d*)[ \t]*/[ \t]*(\d+)(?![\w.,/])")  # 2 1/2
_INT = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d{1,3}(?: \d{3})+(?!\d)|\d+)"  # 1,000 / 1 000 / 1000
_DEC = rf"(?:{_INT}(?:\.\d+)?|\.\d+)"
_TOKEN_RE = re.compile(
    rf"(?<![\w.])(?P<sign>[-+]?)(?P<num>{_DEC})(?P<exp>[eE][-+]?\d+)?"
    rf"(?:[ \t]*/[ \t]*(?P<den>{_DEC}))?(?P<pct>[ \t]*%)?"
    r"(?:[ \t]+(?P<scale>hundred|thousand|million|billion|trillion)\b)?", re.I)
_SCALES = {"hundred": 2, "thousand": 3, "million": 6, "billion": 9, "trillion": 12}
_OPERATORS = "+*/^\u00f7"


def normalize_numeric(text: Any, *, plain: bool = False) -> str | None:
    r"""The one number an answer segment states, as a canonical string; None if there is none.

    This is the only place model text is turned into a number: ``extract_answer`` and
    ``verify`` of the GSM8K env, the numeric-gold path of the MATH/boxed env and the
    reasoning-gym env all call it (``extract_number`` is the same function).

    Canonical form: ASCII digits, "-" for a negative, no thousands separators, the digits
    as written ("3.50" stays "3.50", "6/8" stays "6/8"; values are compared by
    ``is_equivalent``). Read as one number:

    - separators "1,000", "1,000,000", "1 000" / "1\u202f000" / "1\,000" (groups of three);
    - signs "-5", "\u22125" (U+2212) and other dashes, "minus 5", "-$5", "$-5";
    - currency ($, \$, US$, \u20ac, \u00a3, \u00a5, \u20b9) and any words or units around the number
      ("18 eggs", "1,000 dollars", "5 km", "5 cm^2"); "%" is dropped ("50%" -> "50");
    - "1.5 million" -> "1500000", "1e6" -> "1000000", "2 1/2" and "2\u00bd" -> "5/2";
    - LaTeX: \boxed, \frac/\dfrac/\tfrac of numbers, \text{}, \$, \%, \!, \,, {,}, \left/\right;
    - an equation or chain "2 + 3 = 5", "x = 5", "10/3 \u2248 3.33": the part after the last "="
      (or "\u2248") is read;
    - the same value stated twice ("18 (18 eggs)") is that value; a hedge keeps its number
      ("about 40" -> "40").

    None (no single unambiguous number; ``plain=True`` also requires nothing but the number):

    - more than one distinct number in the part that is read -- alternatives "7 or 8",
      "7 and 8", ranges "10-15 apples", "10 to 15", "between 3 and 4", and also prose like
      "12 apples for 3 people": we do not guess which number is the answer;
    - an expression instead of a value ("3 * 4", "x + 1", "2^3", "5 - 5"); two equations
      ("x = 5 or x = 6"); a bound or sign choice ("more than 5", "\u00b15", "x > 5");
    - a number glued to one letter ("4x", "5k", "3i"), a factorial "5!", roots, logs, pi,
      unknown LaTeX commands, malformed numbers ("1,5", "1.000.000"), text over
      ``MAX_ANSWER_CHARS``, and anything that is not a string.
    """
    reading = _read(text)
    if plain and not reading.plain:
        return None
    return reading.value


extract_number = normalize_numeric  # the older name, kept for callers outside the envs (benchmarks)


def _read(text: Any) -> _Reading:
    if not isinstance(text, str) or len(text) > MAX_ANSWER_CHARS:
        return _NOTHING
    try:
        return _read_clean(_clean(text))
    except (ValueError, ArithmeticError):  # a reader answers, never crashes the search
        return _NOTHING


def _clean(text: str) -> str | None:
    """Unicode and LaTeX spelled the one plain-ASCII way; None for LaTeX we cannot read."""
    if "\\boxed" in text or "\\fbox" in text:
        inner = find_boxed(text)
        text = inner if inner is not None else text
    text = _SUPERSCRIPT_RE.sub(lambda m: "^" + m.group().translate(_SUPERSCRIPTS), text)
    text = _VULGAR_RE.sub(lambda m: (m[1] + " " if m[1] else " ")
                          + unicodedata.normalize("NFKC", m[2]).replace("\u2044", "/"), text)
    text = unicodedata.normalize("NFKC", text).translate(_CHARS)  # thin spaces, full-width digits
    text = text.replace("\\$", "$").replace("\\%", "%").replace("{,}", ",").replace("\\!", "").replace("**", " ")
    text = _TEXT_CMD_RE.sub(r" \1 ", text)
    text = _FRAC_SHORT_RE.sub(r"\1/\2", _FRAC_RE.sub(r"\1/\2", text))
    text = re.sub(r"\\(?:left|right|displaystyle)(?![A-Za-z])", "", text)
    text = re.sub(r"\\(?:[,;:> ]|quad|qquad)|~", " ", text)  # 1\,000 -> 1 000
    text = _LATEX_OP_RE.sub(lambda m: _LATEX_OPS[m[1]], text)
    text = re.sub(r"\\[()\[\]]|\\\\", " ", text)
    if re.search(r"\\[A-Za-z]", text):
        return None  # \sqrt, \pi, \log, \overline, ...: not a plain number
    text = text.replace("{", "").replace("}", "").replace("\\", " ")
    text = _CURRENCY_RE.sub(r" \1", text)
    text = re.sub(r"(?<![\d.])(?<![\d.] )\b(?:minus|negative)\s+(?=\.?\d)", "-", text, flags=re.I)
    text = re.sub(r"(^|[(=:\u2248])(\s*)([-+])\s+(?=\.?\d)", r"\1\2\3", text)  # "= - 5" -> "= -5"
    text = re.sub(r"(?<=[A-Za-z])\s*\^\s*-?\d+", "", text)  # units: cm^2, m^-1
    return text.strip()


def _read_clean(text: str | None) -> _Reading:
    if not text or _NOT_A_NUMBER_RE.search(text):
        return _NOTHING
    if _INEXACT_RE.search(text):
        return _AMBIGUOUS
    text = _MIXED_RE.sub(_improper, text)
    parts = re.split("[=\u2248]", text)
    if len(parts) > 1:
        if any(_ALTERNATIVE_RHS_RE.search(p) for p in parts[1:-1]):
            return _AMBIGUOUS
        part = parts[-1]
    else:
        part = text
    tokens = list(_TOKEN_RE.finditer(part))
    if not tokens:
        return _NOTHING
    values = []
    for m in tokens:
        after = part[m.end():]
        if re.match(r"[.,]\d|[A-Za-z](?![A-Za-z])|!", after):
            return _NOTHING  # "1,5", "1.000.000", "4x", "5k", "5!"
        values.append(_token_value(m))
    if any(v is None for v in values):
        return _NOTHING
    gaps = [part[a.end():b.start()] for a, b in zip(tokens, tokens[1:])]
    operator = (_operator_before(part[:tokens[0].start()]) or _operator_after(part[tokens[-1].end():])
                or any(_operator_before(g) or _operator_after(g) for g in gaps))
    if len({v[1] for v in values}) > 1:
        if "-" in gaps:
            return _Reading(None, ambiguous=True, dash_range=True)  # "10-15"; spaced, "10 - 15" is an expression
        return _NOTHING if operator else _AMBIGUOUS
    if operator:
        return _NOTHING  # "x + 1", "5 + 5", "2^3"-like expressions have no single stated number
    plain = len(parts) == 1 and len(tokens) == 1 and not re.sub(r"[\s.]", "", part[:tokens[0].start()]
                                                               + part[tokens[0].end():])
    return _Reading(values[0][0], plain=plain)


def _improper(m: re.Match[str]) -> str:
    """A mixed number "2 1/2" as "5/2" (only when it is one: numerator below denominator)."""
    whole, num, den = int(m[2]), int(m[3]), int(m[4])
    if num >= den:
        return m.group()
    return f"{m[1]}{whole * den + num}/{den}"


def _token_value(m: re.Match[str]) -> tuple[str, Fraction] | None:
    """The canonical string and exact value of one number token."""
    sign = "-" if m["sign"] == "-" else ""
    num = re.sub(r"[, ]", "", m["num"])
    if m["exp"]:
        if abs(int(m["exp"][1:])) > 50:
            return None
        num = format(Decimal(num + m["exp"]), "f")
    if m["scale"]:
        if m["den"]:
            return None
        num = format(Decimal(num).scaleb(_SCALES[m["scale"].lower()]), "f")
    value = Fraction(num)
    if m["den"]:
        den = re.sub(r"[, ]", "", m["den"])
        if Fraction(den) == 0:
            return None
        num, value = f"{num}/{den}", value / Fraction(den)
    return sign + num, -value if sign else value


def _operator_before(s: str) -> bool:
    """Whether an arithmetic operator ends ``s`` (the text before a number): "x + 5", "x-5"."""
    t = s.rstrip()
    return bool(t) and (t[-1] in _OPERATORS or t[-1] == "-")


def _operator_after(s: str) -> bool:
    """Whether an arithmetic operator starts ``s`` (the text after a number); "5-year" is a word."""
    t = s.lstrip()
    return bool(t) and (t[0] in _OPERATORS or (t[0] == "-" and not re.match(r"-[A-Za-z]", t)))


def answer_value(text: Any) -> str | None:
    """The number ``text`` gives as its answer: its final-answer segment (``find_final``) if
    it has one, else all of it, through ``normalize_numeric``."""
    segment = find_final(text)
    return normalize_numeric(text if segment is None else segment)


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


def numeric_equivalent(pred: Any, gold: Any) -> bool:
    """Whether ``pred`` states the number ``gold`` is (GSM8K-style numeric answers).

    Both sides go through ``normalize_numeric`` (``pred`` via ``answer_value``, so raw model
    text "The answer is 1,000 dollars." works as well as an extracted "1000"); an ambiguous or
    missing number is wrong. The normalised values are compared by ``is_equivalent``.
    """
    value = answer_value(pred)
    if value is None or not isinstance(gold, str):
        return False
    return is_equivalent(value, normalize_numeric(gold) or gold)


def boxed_equivalent(pred: Any, gold: Any) -> bool:
    r"""Whether LaTeX answer ``pred`` equals ``gold`` (MATH-style ``\boxed{}`` answers).

    When ``gold`` is a plain number, ``pred`` is first read by ``normalize_numeric`` (the same
    reading as GSM8K): an ambiguous ``pred`` ("7 \text{ or } 8", "10 \text{ to } 15", "\pm 4") is
    wrong, and a number it states ("1\,000", "\u22125", "x = 4") is compared with the gold.
    Otherwise, and for expressions it cannot read ("\sqrt{16}", "2+2", and "10-15", which in
    LaTeX math is a subtraction, not a range), math-verify compares the raw LaTeX.
    """
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    number = normalize_numeric(gold, plain=True)
    if number is not None:
        reading = _read(pred)
        if reading.ambiguous and not reading.dash_range:
            return False
        if reading.value is not None and is_equivalent(reading.value, number):
            return True
    return is_equivalent(pred, gold)


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

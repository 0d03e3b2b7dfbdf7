"""Judging in the framework: reading the sandbox's per-call records as plain data, then
evaluating each trusted check over them (see ``mcts_agent.envs.code.trusted``).

Nothing the sandbox sends is executed: records are tagged JSON (``decode``) parsed by
``json.loads`` (recursion-checked), and checks are evaluated by a small AST interpreter
(``_Evaluator``) that knows literals, operators and ``TRUSTED_FUNCTIONS`` only, with bounds
on what a check may build (``MAX_SEQUENCE``, ``MAX_EXPONENT``).
"""

from __future__ import annotations

import ast
import json
import operator
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from mcts_agent.envs.code.trusted import (MATH, MAX_EXPONENT, MAX_SEQUENCE, PLACEHOLDER, SAFE_MODULES,
                                          TRUSTED_CONSTANTS, TRUSTED_FUNCTIONS, TrustedPlan)


@dataclass(frozen=True)
class Outcome:
    """A check's outcome. ``why`` never includes an expected value (it may be shown to search)."""

    passed: bool
    why: str = ""


# ----- decoding what the sandbox sent --------------------------------------------------------
class Malformed(ValueError):
    """A record from the sandbox is not a value we can decode."""


def decode(text: str) -> Any:
    """The value of one tagged-JSON record (see ``_driver._encode``); raises ``Malformed``.

    Scalars are JSON scalars (NaN and Infinity allowed); every JSON array is tagged by its
    first element: ``["list", ...]``, ``["tuple", ...]``, ``["set", ...]``, ``["frozenset", ...]``,
    ``["dict", [k, v], ...]``, ``["bytes", hex]``, ``["complex", re, im]``, ``["int", hex]``.
    """
    try:
        return _decode(json.loads(text))
    except Malformed:
        raise
    except (ValueError, TypeError, RecursionError, MemoryError, OverflowError) as e:
        raise Malformed(f"{type(e).__name__}") from None


def _decode(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
        raise Malformed("untagged value")
    tag, items = obj[0], obj[1:]
    if tag in _CONTAINERS:
        return _CONTAINERS[tag](_decode(x) for x in items)
    if tag == "dict":
        out = {}
        for pair in items:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise Malformed("bad dict item")
            out[_decode(pair[0])] = _decode(pair[1])
        return out
    if tag == "bytes" and len(items) == 1 and isinstance(items[0], str):
        return bytes.fromhex(items[0])
    if tag == "int" and len(items) == 1 and isinstance(items[0], str):
        return int(items[0], 16)
    if tag == "complex" and len(items) == 2 and all(type(x) in (int, float) for x in items):
        return complex(items[0], items[1])
    raise Malformed(f"unknown tag {tag[:20]!r}")


_CONTAINERS: dict[str, Callable[..., Any]] = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}


# ----- judging --------------------------------------------------------------------------------
def judge(plan: TrustedPlan, values: Sequence[tuple[str, Any]]) -> list[Outcome]:
    """Each check's outcome given the sandbox's records for the calls, in order.

    ``values[i]`` is ``("value", v)``, ``("raised", type name)`` or ``("opaque", type name)``;
    fewer records than calls means the run stopped early (the checks needing the rest fail).
    """
    outcomes = []
    for check in plan.checks:
        missing = [k for k in check.slots if k >= len(values)]
        bad = [values[k] for k in check.slots if k < len(values) and values[k][0] != "value"]
        if missing:
            outcomes.append(Outcome(False, "no result (the run stopped before this test)"))
        elif bad:
            kind, name = bad[0]
            outcomes.append(Outcome(False, f"the call raised {name}" if kind == "raised"
                                    else f"returned a {name}, not plain data"))
        else:
            env = {f"{PLACEHOLDER}{k}": values[k][1] for k in check.slots}
            try:
                ok = bool(_Evaluator(env).run(check.expr))
            except Exception as e:  # noqa: BLE001 - any error in a check is that test failing
                outcomes.append(Outcome(False, f"the check raised {type(e).__name__}"))
                continue
            outcomes.append(Outcome(ok, "" if ok else "wrong value"))
    return outcomes


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow, ast.LShift: operator.lshift,
    ast.RShift: operator.rshift, ast.BitOr: operator.or_, ast.BitAnd: operator.and_, ast.BitXor: operator.xor}
_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos,
                                            ast.Invert: operator.invert}


class _Evaluator:
    """Evaluates a check over plain data: literals, operators and the trusted functions only."""

    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env

    def run(self, node: ast.expr) -> Any:  # noqa: C901 - one branch per node type
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            for table in (TRUSTED_CONSTANTS, TRUSTED_FUNCTIONS, SAFE_MODULES):
                if node.id in table:
                    return table[node.id]
            raise NameError(node.id)
        if isinstance(node, ast.Attribute):
            return MATH[node.attr]
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self.run(e) for e in node.elts]
            return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise TypeError("dict unpacking")
            return {self.run(k): self.run(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
        if isinstance(node, ast.BoolOp):
            value: Any = None
            for e in node.values:
                value = self.run(e)
                if isinstance(node.op, ast.And) != bool(value):
                    return value
            return value
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self.run(node.operand))
        if isinstance(node, ast.BinOp):
            return self._binop(type(node.op), self.run(node.left), self.run(node.right))
        if isinstance(node, ast.Compare):
            left = self.run(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = self.run(comp)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.run(node.body) if self.run(node.test) else self.run(node.orelse)
        if isinstance(node, ast.Subscript):
            return self.run(node.value)[self.run(node.slice)]
        if isinstance(node, ast.Slice):
            return slice(*(None if p is None else self.run(p) for p in (node.lower, node.upper, node.step)))
        if isinstance(node, ast.Call):
            fn = self.run(node.func)
            if not any(fn is f for f in (*TRUSTED_FUNCTIONS.values(), *MATH.values())):
                raise TypeError("not a trusted function")
            return fn(*(self.run(a) for a in node.args), **{k.arg: self.run(k.value) for k in node.keywords})
        raise TypeError(f"unsupported {type(node).__name__}")

    @staticmethod
    def _binop(op: type, a: Any, b: Any) -> Any:
        if op is ast.Mult:
            for seq, n in ((a, b), (b, a)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE:
                    raise MemoryError("sequence too long")
        if op in (ast.Pow, ast.LShift) and isinstance(b, int) and abs(b) > MAX_EXPONENT:
            raise OverflowError("exponent too large")
        return _BINOPS[op](a, b)


def parse_records(body: bytes, n_calls: int) -> list[tuple[str, Any]]:
    """The sandbox's per-call records (``_driver`` lines after the ``S``), in order, as ``judge`` takes them.

    Reading stops at the first line that is not the next record: a duplicate, a gap, a
    partial last line or junk the program wrote all end the list there (what is missing fails).
    """
    values: list[tuple[str, Any]] = []
    lines = body.split(b"\n")
    for line in lines[:-1]:  # the last piece is the end marker, a partial record or empty
        if len(values) >= n_calls:
            break
        kind, _, rest = line.partition(b" ")
        if kind[:1] not in (b"R", b"E", b"U") or kind[1:] != str(len(values)).encode():
            break
        if kind[:1] == b"R":
            try:
                values.append(("value", decode(rest.decode("ascii"))))
            except (Malformed, UnicodeDecodeError):
                values.append(("opaque", "malformed record"))
        else:
            name = rest[:80].decode("ascii", "replace")
            values.append(("raised" if kind[:1] == b"E" else "opaque", name))
    return values

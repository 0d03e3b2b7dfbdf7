"""Trusted verdicts: tests split into inputs for the sandbox and checks only the framework runs.

A test file has the *trusted shape* when it is a sequence of ``assert`` statements, at module
level (MBPP) or in HumanEval's ``def check(candidate): ...`` followed by ``check(<name>)``
(imports and an unused ``METADATA = {...}`` are allowed). Each assert is split (``plan_tests``):

- every maximal expression rooted at a name the program may define (``candidate``, the
  program's own names, any name that is not one of ``TRUSTED_FUNCTIONS``), e.g.
  ``candidate([1, 2], 3)`` or ``sorted(f(x))[0]``, becomes a *call*: its source (inputs only)
  is all that enters the sandbox, which evaluates it and sends back the value as tagged JSON
  (see ``decode``);
- what is left, e.g. ``abs(_v0 - 0.33) < 1e-6`` or ``_v1 == [1, 2]``, is a *check* that the
  framework evaluates itself (``judge``) with a small AST interpreter that knows only
  literals, comparisons, arithmetic and ``TRUSTED_FUNCTIONS``, never ``eval`` or pickle
  (``mcts_agent.envs.code.judge``).

So expected values never enter the untrusted process, and no byte it writes is executed:
at worst it sends wrong values (which fail) or malformed records (which fail). Tests of
any other shape (loops, helpers, random inputs) return ``None`` from ``plan_tests`` and run
inside the sandbox, a weaker guarantee the result states (``verdict_source="in-process"``).
"""

from __future__ import annotations

import ast
import math
import warnings
from dataclasses import dataclass
from typing import Any

PLACEHOLDER = "_mcts_v"
SAFE_MODULES = {"math": math}
MATH = {name: getattr(math, name) for name in (
    "isclose", "fabs", "isnan", "isinf", "isfinite", "floor", "ceil", "sqrt", "trunc", "copysign",
    "pi", "e", "inf", "nan", "tau")}
TRUSTED_FUNCTIONS: dict[str, Any] = {
    f.__name__: f for f in (abs, all, any, bool, dict, divmod, float, frozenset, int, isinstance, len, list,
                            max, min, round, set, sorted, str, sum, tuple, type, bytes, complex)}
TRUSTED_CONSTANTS = {"None": None, "True": True, "False": False}
MAX_SEQUENCE = 10_000_000  # a check may not build a longer str/list/tuple (``[0] * n``)
MAX_EXPONENT = 10_000


@dataclass(frozen=True)
class Check:
    """One assert: the expression the framework evaluates, over the values of ``slots``."""

    expr: ast.expr  # placeholders are Name(f"{PLACEHOLDER}{k}") for k in slots
    slots: tuple[int, ...]


@dataclass(frozen=True)
class TrustedPlan:
    """What the sandbox gets (``calls``, ``imports``, ``candidate``) and what it never sees (``checks``)."""

    calls: tuple[str, ...]  # expression sources, evaluated in the program's namespace
    checks: tuple[Check, ...]
    imports: tuple[str, ...]  # modules the calls may name (imported before they run)
    candidate: str | None  # the program's function bound to ``candidate`` (HumanEval's check form)

    def sandbox_source(self) -> str:
        """The only test-derived text that enters the sandbox: inputs, no expected values."""
        return repr({"calls": list(self.calls), "imports": list(self.imports), "candidate": self.candidate})


# ----- planning -------------------------------------------------------------------------------
def program_names(program: str) -> set[str] | None:
    """Every name ``program`` binds anywhere (an over-approximation: safe), None if it does not parse."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes in model-written code are its problem
            tree = ast.parse(program)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def plan_tests(tests: str, program: str) -> TrustedPlan | None:
    """Split ``tests`` into sandbox calls and trusted checks, or None if they lack the trusted shape."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = ast.parse(tests)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    defined = program_names(program)
    if defined is None:
        defined = set()  # the program will fail to compile in the sandbox; the plan is still valid
    asserts, candidate, imports, test_bound = _asserts_of(module)
    if asserts is None:
        return None
    splitter = _Splitter(defined, test_bound, candidate is not None, set(imports))
    checks = []
    for node in asserts:
        expr = splitter.split(node.test)
        if expr is None or not _evaluable(expr):
            return None
        checks.append(Check(expr, tuple(splitter.slots_of(expr))))
    return TrustedPlan(tuple(splitter.calls), tuple(checks), tuple(sorted(imports)), candidate)


def _asserts_of(module: ast.Module) -> tuple[list[ast.Assert] | None, str | None, list[str], set[str]]:
    """(asserts, candidate, imported modules, names the test binds) of a trusted-shape module."""
    asserts: list[ast.Assert] = []
    imports: list[str] = []
    bound: set[str] = set()
    check_fn: ast.FunctionDef | None = None
    candidate = None
    body = list(module.body)
    for i, node in enumerate(body):
        if isinstance(node, ast.Assert):
            asserts.append(node)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname is None and alias.name in SAFE_MODULES:
                    imports.append(alias.name)
                else:
                    bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            bound.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Assign) and _is_literal(node.value):
            bound.update(n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Pass) or _is_noop_expr(node):
            continue
        elif isinstance(node, ast.For) and (unrolled := _unroll(node)) is not None:
            asserts.extend(unrolled)
        elif isinstance(node, ast.FunctionDef) and check_fn is None and _is_check_def(node):
            check_fn = node
            bound.add(node.name)
        elif check_fn is not None and i == len(body) - 1 and _calls_check(node, check_fn.name):
            candidate = node.value.args[0].id  # type: ignore[attr-defined]
        else:
            return None, None, [], set()
    if check_fn is not None:
        if candidate is None:
            return None, None, [], set()
        for stmt in check_fn.body:
            unrolled = _unroll(stmt) if isinstance(stmt, ast.For) else None
            if isinstance(stmt, ast.Assert):
                asserts.append(stmt)
            elif unrolled is not None:
                asserts.extend(unrolled)
            elif not (isinstance(stmt, ast.Pass) or _is_noop_expr(stmt)):
                return None, None, [], set()
    return asserts, candidate, imports, bound


def _is_noop_expr(stmt: ast.stmt) -> bool:
    """A docstring, or a bare ``print`` (HumanEval/129 has one)."""
    return isinstance(stmt, ast.Expr) and (isinstance(stmt.value, ast.Constant) or (
        isinstance(stmt.value, ast.Name) and stmt.value.id == "print"))


def _unroll(loop: ast.For, limit: int = 1000) -> list[ast.Assert] | None:
    """``for x in range(<ints>): assert ...`` as one assert per value of x, or None."""
    it = loop.iter
    if not (isinstance(loop.target, ast.Name) and not loop.orelse and isinstance(it, ast.Call)
            and isinstance(it.func, ast.Name) and it.func.id == "range" and not it.keywords
            and 1 <= len(it.args) <= 3 and all(isinstance(stmt, ast.Assert) for stmt in loop.body)):
        return None
    bounds = [a.value if isinstance(a, ast.Constant) else None for a in it.args]
    if not all(type(b) is int for b in bounds) or len(range(*bounds)) > limit:  # type: ignore[misc]
        return None
    name = loop.target.id
    out = []
    for value in range(*bounds):  # type: ignore[misc]
        for stmt in loop.body:
            copy = ast.parse(ast.unparse(stmt)).body[0]
            for node in ast.walk(copy):
                for field, child in ast.iter_fields(node):
                    if isinstance(child, ast.Name) and child.id == name:
                        setattr(node, field, ast.Constant(value))
                    elif isinstance(child, list):
                        child[:] = [ast.Constant(value) if isinstance(c, ast.Name) and c.id == name else c
                                    for c in child]
            out.append(copy)  # type: ignore[arg-type]
    return out


def _is_check_def(node: ast.FunctionDef) -> bool:
    a = node.args
    return (not node.decorator_list and len(a.args) == 1 and not a.posonlyargs and not a.kwonlyargs
            and a.vararg is None and a.kwarg is None and a.args[0].arg == "candidate")


def _calls_check(node: ast.stmt, name: str) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
            and node.value.func.id == name and len(node.value.args) == 1 and not node.value.keywords
            and isinstance(node.value.args[0], ast.Name))


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


class _Splitter(ast.NodeTransformer):
    """Replaces each maximal expression rooted at an untrusted name by a placeholder.

    In the check form only ``candidate`` may root a call (the inputs of a call may use the
    program's helpers); at module level any untrusted name may, but its inputs may not name
    another one (``helper(f(x), expected)`` would carry an expected value into the sandbox).
    """

    def __init__(self, defined: set[str], test_bound: set[str], check_form: bool, modules: set[str]) -> None:
        self.defined, self.test_bound, self.check_form, self.modules = defined, test_bound, check_form, modules
        self.calls: list[str] = []
        self.ok = True

    def split(self, expr: ast.expr) -> ast.expr | None:
        self.ok = True
        out = self.visit(ast.parse(ast.unparse(expr), mode="eval").body)  # a private copy
        return out if self.ok else None

    def slots_of(self, expr: ast.expr) -> list[int]:
        return [int(n.id[len(PLACEHOLDER):]) for n in ast.walk(expr)
                if isinstance(n, ast.Name) and n.id.startswith(PLACEHOLDER)]

    def _untrusted(self, name: str) -> bool:
        if name == "candidate" and self.check_form:
            return True
        if name in self.test_bound or name.startswith(PLACEHOLDER):
            self.ok = False  # a name only the test file defines: the check cannot be split off
            return False
        if name in SAFE_MODULES or name in TRUSTED_CONSTANTS:
            return False  # ``math`` is always the real module, as the trusted side knows it
        return name not in TRUSTED_FUNCTIONS or name in self.defined

    def generic_visit(self, node: ast.AST) -> ast.AST:
        root = _root(node) if isinstance(node, ast.expr) else None
        if root is not None and self._untrusted(root.id):
            if self.check_form and root.id != "candidate":
                self.ok = False  # e.g. ``poly(xs, candidate(xs))``: the program would compute the check
            for inner in ast.walk(node):
                if isinstance(inner, ast.Name) and inner is not root:
                    untrusted = self._untrusted(inner.id)
                    if untrusted and not self.check_form:
                        self.ok = False
            self.calls.append(ast.unparse(node))
            return ast.copy_location(ast.Name(f"{PLACEHOLDER}{len(self.calls) - 1}", ast.Load()), node)
        return super().generic_visit(node)


def _root(node: ast.expr) -> ast.Name | None:
    """The name a chain of calls, attributes and subscripts starts from (``f`` in ``f(x).a[0]``)."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node if isinstance(node, ast.Name) else None


_ALLOWED_NODES = (ast.Constant, ast.Name, ast.Load, ast.Attribute, ast.Call, ast.keyword, ast.List, ast.Tuple,
                  ast.Set, ast.Dict, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Subscript, ast.Slice,
                  ast.IfExp, ast.cmpop, ast.boolop, ast.unaryop, ast.operator)


def _evaluable(expr: ast.expr) -> bool:
    """Whether ``_Evaluator`` can run ``expr`` (only allowed nodes; attributes only of safe modules)."""
    for node in ast.walk(expr):
        if not isinstance(node, _ALLOWED_NODES) or isinstance(node, (ast.MatMult,)):
            return False
        if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and node.value.id == "math"
                                                    and node.attr in MATH):
            return False
        if isinstance(node, ast.keyword) and node.arg is None:
            return False
    return True

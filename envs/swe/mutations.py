"""Procedural, formatting-preserving bug injections on Python source (libcst), in the manner of SWE-smith.

Each ``Mutation`` kind finds its sites in a module; ``sites(source)`` lists every
``(kind, index)`` a module offers and ``mutate(source, kind, index)`` returns the module
with that one site changed and everything else byte-for-byte as it was:

* ``flip_compare``: ``<`` <-> ``>=``, ``>`` <-> ``<=``, ``==`` <-> ``!=``, ``is`` <-> ``is not``, ``in`` <-> ``not in``;
* ``flip_arith``: ``+`` <-> ``-``, ``*`` <-> ``//`` (binary operators);
* ``swap_operands``: ``a - b`` -> ``b - a`` (non-commutative operators and comparisons);
* ``change_constant``: an int literal ``n`` -> ``n + 1``;
* ``flip_bool``: ``and`` <-> ``or``;
* ``invert_if``: ``if c: A else: B`` -> ``if c: B else: A``;
* ``remove_if``: an ``if`` without ``else`` removed;
* ``remove_assign``: an assignment statement inside a function body removed (not the only one);
* ``remove_loop``: a ``for`` / ``while`` loop inside a function removed.
"""

from __future__ import annotations



import libcst as cst

from mcts_agent.envs.swe.config import KINDS

_COMPARE = {cst.LessThan: cst.GreaterThanEqual, cst.GreaterThanEqual: cst.LessThan, cst.GreaterThan: cst.LessThanEqual,
            cst.LessThanEqual: cst.GreaterThan, cst.Equal: cst.NotEqual, cst.NotEqual: cst.Equal, cst.Is: cst.IsNot,
            cst.IsNot: cst.Is, cst.In: cst.NotIn, cst.NotIn: cst.In}
_ARITH = {cst.Add: cst.Subtract, cst.Subtract: cst.Add, cst.Multiply: cst.FloorDivide, cst.FloorDivide: cst.Multiply}
_NONCOMMUTATIVE = (cst.Subtract, cst.FloorDivide, cst.Divide, cst.Modulo, cst.LeftShift, cst.RightShift)


def _same_ws(new_cls: type, old: cst.CSTNode) -> cst.CSTNode:
    kw = {}
    for name in ("whitespace_before", "whitespace_after", "whitespace_between"):
        if hasattr(old, name):
            kw[name] = getattr(old, name)
    if new_cls in (cst.IsNot, cst.NotIn) and "whitespace_between" not in kw:
        kw["whitespace_between"] = cst.SimpleWhitespace(" ")
    if new_cls in (cst.Is, cst.In):
        kw.pop("whitespace_between", None)
    return new_cls(**kw)


class _Mutator(cst.CSTTransformer):
    """Counts the sites of ``kind``; changes the one numbered ``target`` (-1: only count)."""

    def __init__(self, kind: str, target: int = -1) -> None:
        super().__init__()
        self.kind, self.target, self.count, self.depth = kind, target, 0, 0

    def _hit(self) -> bool:
        self.count += 1
        return self.count - 1 == self.target

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.depth += 1

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.CSTNode:
        self.depth -= 1
        return updated

    def leave_Comparison(self, original: cst.Comparison, updated: cst.Comparison) -> cst.BaseExpression:
        if self.depth and self.kind == "flip_compare" and len(updated.comparisons) == 1:
            target = updated.comparisons[0]
            if type(target.operator) in _COMPARE and self._hit():
                op = _same_ws(_COMPARE[type(target.operator)], target.operator)
                return updated.with_changes(comparisons=[target.with_changes(operator=op)])
        if self.depth and self.kind == "swap_operands" and len(updated.comparisons) == 1:
            target = updated.comparisons[0]
            if isinstance(target.operator, (cst.LessThan, cst.GreaterThan)) and self._hit():
                return updated.with_changes(left=target.comparator,
                                            comparisons=[target.with_changes(comparator=updated.left)])
        return updated

    def leave_BinaryOperation(self, original: cst.BinaryOperation, updated: cst.BinaryOperation) -> cst.BaseExpression:
        if not self.depth:
            return updated
        if self.kind == "flip_arith" and type(updated.operator) in _ARITH and self._hit():
            return updated.with_changes(operator=_same_ws(_ARITH[type(updated.operator)], updated.operator))
        if self.kind == "swap_operands" and isinstance(updated.operator, _NONCOMMUTATIVE) and self._hit():
            return updated.with_changes(left=updated.right, right=updated.left)
        return updated

    def leave_BooleanOperation(self, original: cst.BooleanOperation, updated: cst.BooleanOperation) -> cst.BaseExpression:
        if self.depth and self.kind == "flip_bool" and self._hit():
            new = cst.Or if isinstance(updated.operator, cst.And) else cst.And
            return updated.with_changes(operator=_same_ws(new, updated.operator))
        return updated

    def leave_Integer(self, original: cst.Integer, updated: cst.Integer) -> cst.BaseExpression:
        if self.depth and self.kind == "change_constant" and updated.value.isdigit() and self._hit():
            return updated.with_changes(value=str(int(updated.value) + 1))
        return updated

    def leave_If(self, original: cst.If, updated: cst.If) -> cst.CSTNode | cst.RemovalSentinel:
        if not self.depth:
            return updated
        if self.kind == "invert_if" and isinstance(updated.orelse, cst.Else) and self._hit():
            then, other = updated.body, updated.orelse.body  # swap the statements; each line keeps its comment
            if isinstance(then, cst.IndentedBlock) and isinstance(other, cst.IndentedBlock):
                return updated.with_changes(body=then.with_changes(body=other.body), orelse=updated.orelse.with_changes(
                    body=other.with_changes(body=then.body)))
            return updated.with_changes(body=other, orelse=updated.orelse.with_changes(body=then))
        if self.kind == "remove_if" and updated.orelse is None and self._hit():
            return cst.RemoveFromParent()
        return updated

    def leave_SimpleStatementLine(self, original: cst.SimpleStatementLine,
                                  updated: cst.SimpleStatementLine) -> cst.CSTNode | cst.RemovalSentinel:
        if self.depth and self.kind == "remove_assign" and len(updated.body) == 1 and isinstance(
                updated.body[0], (cst.Assign, cst.AugAssign)) and self._hit():
            return cst.RemoveFromParent()
        return updated

    def leave_For(self, original: cst.For, updated: cst.For) -> cst.CSTNode | cst.RemovalSentinel:
        return self._loop(updated)

    def leave_While(self, original: cst.While, updated: cst.While) -> cst.CSTNode | cst.RemovalSentinel:
        return self._loop(updated)

    def _loop(self, updated: cst.CSTNode) -> cst.CSTNode | cst.RemovalSentinel:
        if self.depth and self.kind == "remove_loop" and self._hit():
            return cst.RemoveFromParent()
        return updated

    def leave_IndentedBlock(self, original: cst.IndentedBlock, updated: cst.IndentedBlock) -> cst.CSTNode:
        if not updated.body:  # a removal emptied a block: keep it valid Python
            return updated.with_changes(body=[cst.SimpleStatementLine([cst.Pass()])])
        return updated


def sites(source: str) -> list[tuple[str, int]]:
    """Every ``(kind, index)`` site of ``source`` (a module that libcst parses)."""
    module = cst.parse_module(source)
    out = []
    for kind in KINDS:
        counter = _Mutator(kind)
        module.visit(counter)
        out += [(kind, i) for i in range(counter.count)]
    return out


def mutate(source: str, kind: str, index: int) -> str:
    """``source`` with site ``index`` of ``kind`` changed; the rest unchanged."""
    if kind not in KINDS:
        raise ValueError(f"unknown mutation {kind!r}; kinds: {list(KINDS)}")
    return cst.parse_module(source).visit(_Mutator(kind, index)).code




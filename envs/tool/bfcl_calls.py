"""The safe layer over BFCL's decoder, AST checker, multi-turn executor and checker.

BFCL's decoder ``eval()``s arithmetic and lambdas while decoding, and its executor
``eval()``s call strings with builtins. Untrusted model text therefore passes two guards:

* ``inspect_text`` before decoding: an AST whitelist (calls whose arguments are literals,
  containers of literals, bare names, or + - * / between numeric literals; bounded size);
* ``call_problem`` before executing: every call is ``NAME(kw=literal, ...)`` with NAME one
  of the task's functions.

Verdicts are BFCL's own: ``ast_checker`` (scored with ``underscore_to_dot``, since the tools we
show come from ``convert_to_tool`` which renames ``a.b`` to ``a_b``), BFCL's relevance rule, and
``multi_turn_checker`` under a fresh model name whose cached backend instances are deleted
afterwards (BFCL keeps them as module globals: a second verdict would see stale state).
Every call into BFCL's executor and checker holds one lock, so all of this is thread-safe.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import threading
import uuid
from typing import Any, Sequence

from mcts_agent.envs.tool import bfcl_data
from mcts_agent.env import Task

bfcl_data.require_bfcl()

from bfcl_eval.constants.enums import Language, ReturnFormat  # noqa: E402
from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker  # noqa: E402
from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils as _mtu  # noqa: E402
from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker  # noqa: E402
from bfcl_eval.model_handler.utils import default_decode_ast_prompting, default_decode_execute_prompting  # noqa: E402
from bfcl_eval.utils import is_empty_output, is_function_calling_format_output  # noqa: E402

MAX_TEXT_CHARS = 20_000  # longer actions are refused before parsing
MAX_ARITHMETIC = 32  # + - * / operators per action (BFCL eval()s them)
MAX_INT = 10**100  # integer literals at or above this are refused (keeps arithmetic results small)
REFUSED_CALL = "__mcts_agent_refused_call__()"  # stands in for a refused call: BFCL reports it undefined
_LOCK = threading.RLock()
_NUMERIC = (int, float)
_ARITH = (ast.Add, ast.Sub, ast.Mult, ast.Div)


# ----- the text guard ----------------------------------------------------------------------
def _bfcl_view(text: str) -> str:
    """The string BFCL's prompting decoder hands to ``ast.parse`` (same cleaning, same brackets)."""
    s = text.strip("`\n ")
    s = s if s.startswith("[") else "[" + s
    s = s if s.endswith("]") else s + "]"
    return s.strip().strip("'")


def _is_number(v: ast.AST) -> bool:
    if isinstance(v, ast.Constant):
        return type(v.value) in _NUMERIC and not (type(v.value) is int and abs(v.value) >= MAX_INT)
    if isinstance(v, ast.UnaryOp):
        return isinstance(v.op, ast.USub) and _is_number(v.operand) and isinstance(v.operand, ast.Constant)
    return isinstance(v, ast.BinOp) and isinstance(v.op, _ARITH) and _is_number(v.left) and _is_number(v.right)


def _value_problem(v: ast.AST) -> str | None:
    if isinstance(v, ast.Constant):
        if v.value is not None and type(v.value) not in (str, int, float, bool):
            return f"literal of type {type(v.value).__name__}"
        if type(v.value) is int and abs(v.value) >= MAX_INT:
            return "an integer literal with 100 or more digits"
        return None
    if isinstance(v, ast.Name):
        return None  # BFCL reads a bare name as a string
    if isinstance(v, (ast.UnaryOp, ast.BinOp)):
        return None if _is_number(v) else f"{ast.unparse(v)[:60]!r} (only + - * / between number literals)"
    if isinstance(v, (ast.List, ast.Tuple)):
        return next((p for p in map(_value_problem, v.elts) if p), None)
    if isinstance(v, ast.Dict):
        keys = [k for k in v.keys if k is not None]
        if len(keys) < len(v.keys):
            return "dict unpacking (**)"
        return next((p for p in map(_value_problem, [*keys, *v.values]) if p), None)
    return f"{type(v).__name__} {ast.unparse(v)[:60]!r} (only literals, containers of literals and names)"


def _call_problem(c: ast.Call) -> str | None:
    f: ast.AST = c.func
    while isinstance(f, ast.Attribute):
        f = f.value
    if not isinstance(f, ast.Name):
        return f"the callee {ast.unparse(c.func)[:60]!r} is not a function name"
    if any(k.arg is None for k in c.keywords):
        return "keyword unpacking (**)"
    return next((p for p in map(_value_problem, [*c.args, *(k.value for k in c.keywords)]) if p), None)


def inspect_text(text: str) -> tuple[str, str]:
    """``("ok" | "syntax" | "refused", detail)`` for model text, before any BFCL decoding.

    "syntax": BFCL's decoder cannot parse it (nothing gets evaluated); "refused": it parses
    but holds something outside the whitelist, so it must not reach BFCL's decoder.
    """
    if not isinstance(text, str):
        return "refused", f"expected a str, got {type(text).__name__}"
    if len(text) > MAX_TEXT_CHARS:
        return "refused", f"{len(text)} characters (at most {MAX_TEXT_CHARS})"
    try:
        tree = ast.parse(_bfcl_view(text), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as e:
        return "syntax", f"{type(e).__name__}: {e}"
    if sum(isinstance(n, ast.BinOp) for n in ast.walk(tree)) > MAX_ARITHMETIC:
        return "refused", f"more than {MAX_ARITHMETIC} arithmetic operators"
    body = tree.body
    items = [body] if isinstance(body, ast.Call) else list(getattr(body, "elts", []))
    for item in items:
        problem = _call_problem(item) if isinstance(item, ast.Call) else None
        if problem:
            return "refused", problem
    if not items or not all(isinstance(i, ast.Call) for i in items):
        return ("ok", "") if isinstance(body, ast.List) and not items else ("syntax", "not a list of calls")
    return "ok", ""


def _decode_error(e: Exception, detail: str) -> str:
    return f"invalid syntax: {type(e).__name__}: {e}" if str(e) else f"invalid syntax: {detail or type(e).__name__}"


def decode_calls(text: str) -> list[dict[str, Any]] | str:
    """BFCL's prompting decoder (``[{name: {param: value}}]``) behind the guard; a str says why not."""
    status, detail = inspect_text(text)
    if status == "refused":
        return f"refused by the safety guard: {detail}"
    try:
        return default_decode_ast_prompting(text, ReturnFormat.PYTHON, False)
    except Exception as e:  # noqa: BLE001 - BFCL's decoder raises anything on bad text
        return _decode_error(e, detail)


def decode_execution(text: str) -> list[str] | str:
    """BFCL's execute decoder (call strings such as ``"cd(folder='x')"``) behind the guard; a str says why not."""
    status, detail = inspect_text(text)
    if status == "refused":
        return f"refused by the safety guard: {detail}"
    try:
        return default_decode_execute_prompting(text, False)
    except Exception as e:  # noqa: BLE001 - BFCL's decoder raises anything on bad text
        return _decode_error(e, detail)


def looks_like_call(text: str, names: Sequence[str]) -> bool:
    """Whether text that failed to decode was meant as a call (else it is a prose reply)."""
    s = text.strip().strip("`").strip()
    if s.startswith("[") or re.match(r"[A-Za-z_][\w.]*\(", s):
        return True
    return any(re.search(rf"(?<![\w.]){re.escape(n)}\s*\(", text) for n in names)


def canonical(calls: Any) -> str:
    """A canonical JSON of decoded calls (sorted), so equal answers vote together."""
    return json.dumps(sorted(json.dumps(c, sort_keys=True, ensure_ascii=False, default=str) for c in calls))


# ----- single-turn verdict -------------------------------------------------------------------
def single_turn_verdict(task: Task, text: str) -> tuple[bool, str]:
    """BFCL's verdict on one raw reply (``_evaluate_single_ast_entry`` / the relevance rule): (valid, why)."""
    cat = bfcl_data.task_category(task, bfcl_data.BFCL_SINGLE_TURN)
    decoded = decode_calls(text)
    if cat == "irrelevance":  # right iff the reply holds no call (a refused reply is a call attempt)
        called = decoded.startswith("refused") if isinstance(decoded, str) else not is_empty_output(decoded)
        return (False, "irrelevance_error:decoder_success: a function call was made") if called else (True, "")
    if isinstance(decoded, str):
        return False, f"ast_decoder:decoder_failed: {decoded}"
    if not is_function_calling_format_output(decoded):
        return False, "ast_decoder:decoder_wrong_output_format"
    try:
        r = ast_checker(copy.deepcopy(list(task.meta["functions"])), decoded, bfcl_data.gold_of(task),
                        Language.PYTHON, cat, bfcl_data.FC_MODEL)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        return False, f"checker_exception: {type(e).__name__}: {e}"
    if r["valid"]:
        return True, ""
    return False, f"{r.get('error_type')}: {json.dumps(r.get('error'), default=str)[:400]}"


# ----- multi-turn execution and verdict --------------------------------------------------------
def _token() -> str:
    return "mctsagent" + uuid.uuid4().hex


def clear_instances(model_name: str) -> None:
    """Delete the backend instances BFCL's executor cached under ``model_name`` (stale-state trap)."""
    prefix = re.sub(r"[-./:]", "_", model_name)
    g = vars(_mtu)
    for k in [k for k in list(g) if k.startswith(prefix) and k.endswith("_instance")]:
        g.pop(k, None)


def build_backends(task: Task) -> dict[str, Any]:
    """Fresh BFCL backend instances for a multi-turn task (``cls()`` + ``_load_scenario``), by BFCL's executor."""
    m, token = task.meta, _token()
    with _LOCK:
        try:
            _, inst = _mtu.execute_multi_turn_func_call([], m["initial_config"], list(m["involved_classes"]),
                                                        token, "x", long_context=False, is_evaL_run=False)
        finally:
            clear_instances(token)
    return dict(inst)


def call_problem(call: str, allowed: Sequence[str], shown: Sequence[str] | None = None) -> str | None:
    """Why a call string must not run (None if it is ``NAME(kw=literal, ...)`` with NAME in ``allowed``).

    ``shown``: the function names an unknown-function message lists (default: ``allowed``).
    """
    try:
        node = ast.parse(call, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        return f"unparsable call {call[:80]!r} ({type(e).__name__})"
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return f"{call[:80]!r} is not a plain function call"
    if node.func.id not in allowed:
        return f"unknown function {node.func.id!r}; available: {', '.join(sorted(shown or allowed))}"
    if node.args:
        return f"{node.func.id}: positional arguments; pass every argument by name"
    for kw in node.keywords:
        try:
            ast.literal_eval(kw.value)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            return f"{node.func.id}: argument {kw.arg!r} is not a literal value ({ast.unparse(kw.value)[:60]!r})"
    return None


def execute(backends: dict[str, Any], calls: Sequence[str], allowed: Sequence[str]) -> list[str]:
    """Run guarded call strings on ``backends`` (mutated in place) with BFCL's executor; BFCL's result strings."""
    problems = [p for p in (call_problem(c, allowed) for c in calls) if p]
    if problems:
        raise ValueError(f"refused to execute: {problems[0]}")
    token = _token()
    with _LOCK:
        g = vars(_mtu)
        try:
            for cls, inst in backends.items():
                g[f"{token}_x_{cls}_instance"] = inst  # the executor finds these and skips loading
            results, _ = _mtu.execute_multi_turn_func_call(list(calls), {}, list(backends), token, "x")
        finally:
            clear_instances(token)
    return list(results)


def is_empty_step(calls: Sequence[str]) -> bool:
    """BFCL's rule for a step that holds no call (``[]`` or ``[""]``)."""
    return bool(_mtu.is_empty_execute_response(list(calls)))


def all_function_names(task: Task) -> list[str]:
    """Every function of a multi-turn task, the miss_func held-out ones included."""
    held = task.meta.get("missed_function", {})
    return [f["name"] for f in task.meta["functions"]] + [f["name"] for fs in held.values() for f in fs]


def decode_steps(turns: Sequence[Sequence[Any]]) -> list[list[list[str]]]:
    """Per turn, per step: raw texts decoded like BFCL's evaluator (undecodable/empty steps dropped);
    a step given as a list of call strings is kept as it is."""
    out = []
    for turn in turns:
        steps = []
        for step in turn:
            calls = decode_execution(step) if isinstance(step, str) else list(step)
            if isinstance(calls, list) and not is_empty_step(calls):
                steps.append(calls)
        out.append(steps)
    return out


def multi_turn_verdict(task: Task, turns: Sequence[Sequence[Any]]) -> tuple[bool, dict[str, Any]]:
    """BFCL's verdict (``_evaluate_single_multi_turn_entry``) on per-turn, per-step replies: (valid, details).

    A step is raw text or a list of call strings. Text the guard refuses is dropped like
    undecodable text, and a call outside the executor guard is replaced by one BFCL reports
    as undefined, so nothing unsafe runs (BFCL itself would run them).
    """
    bfcl_data.task_category(task, bfcl_data.BFCL_MULTI_TURN)
    gold = bfcl_data.gold_of(task)
    if len(turns) != len(gold):
        return False, {"error_type": "multi_turn:force_terminated",
                       "error_message": f"{len(turns)} model turns vs {len(gold)} ground-truth turns"}
    allowed = all_function_names(task)
    decoded = [[[c if call_problem(c, allowed) is None else REFUSED_CALL for c in step] for step in turn]
               for turn in decode_steps(turns)]
    entry = {"id": task.id, "initial_config": copy.deepcopy(task.meta["initial_config"]),
             "involved_classes": list(task.meta["involved_classes"])}
    token = _token()
    with _LOCK:
        try:
            r = multi_turn_checker(decoded, gold, entry, task.meta["category"], token)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, AssertionError) as e:
            return False, {"error_type": "checker_exception", "error_message": f"{type(e).__name__}: {e}"}
        finally:
            clear_instances(token)
    return bool(r.pop("valid")), r

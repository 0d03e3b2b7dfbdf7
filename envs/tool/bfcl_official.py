"""BFCL's OWN evaluation (``eval_runner.evaluate_task``) on raw model outputs, and reference replies.

``official_verdicts(category, {id: raw})`` writes the outputs as a BFCL result file in a
temporary folder, runs BFCL's evaluator on it under a fresh model name, and reads the
per-entry verdicts back from BFCL's score file. It is the ground truth our own verdicts
(``bfcl_calls``) are checked against, and what a benchmark can report as "the BFCL score".
BFCL's evaluator ``eval()``s what it decodes, so outputs the safety guard refuses are not
fed to it (``on_unsafe``). It needs, beyond the env's dependencies, numpy, pandas,
overrides, python-dotenv and tqdm.

``reference_reply`` / ``reference_turns`` render a task's gold as model replies, and
``oracle_script`` is a ``ScriptedBackend`` script that writes them (for oracle agents and
agreement checks).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import importlib
import inspect
import io
import json
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mcts_agent.env import Task
from mcts_agent.envs.tool import bfcl_calls, bfcl_data
from mcts_agent.envs.tool.bfcl import NO_CALL
from mcts_agent.envs.tool.bfcl_multi import user_turn_text
from mcts_agent.errors import EnvError

# bfcl_eval is imported only after bfcl_data, whose import isolates it (see there).
from bfcl_eval.constants.category_mapping import VERSION_PREFIX  # noqa: E402
from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING  # noqa: E402
from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils  # noqa: E402
from bfcl_eval.model_handler.utils import default_decode_ast_prompting, default_decode_execute_prompting  # noqa: E402

_LOCK = threading.Lock()
Raw = str | Sequence[Sequence[str]]
"""A raw output: the reply text (single-turn), or per user turn, per step, the reply texts (multi-turn)."""


class _PromptingHandler:
    """All BFCL's evaluator needs from a model handler: the prompting decoders."""

    def decode_ast(self, result: str, language: Any, has_tool_call_tag: bool = False) -> list[dict[str, Any]]:
        return default_decode_ast_prompting(result, language, has_tool_call_tag)

    def decode_execute(self, result: str, has_tool_call_tag: bool = False) -> list[str]:
        return default_decode_execute_prompting(result, has_tool_call_tag)


def _evaluate_task() -> Any:
    try:
        from bfcl_eval.eval_checker.eval_runner import evaluate_task
    except ImportError as e:
        raise EnvError(f"BFCL's own evaluator needs numpy, pandas, overrides, python-dotenv and tqdm ({e}); "
                       f"pip install them, or use mcts_agent.envs.tool.bfcl_calls for the same verdicts") from e
    return evaluate_task


def _unsafe(category: str, raw: Any, names: Sequence[str]) -> str | None:
    """Why BFCL's evaluator must not see ``raw`` (None if it may)."""
    texts = [raw] if isinstance(raw, str) else [s for turn in raw for s in turn] if isinstance(raw, list) else []
    for text in texts:
        status, detail = bfcl_calls.inspect_text(text) if isinstance(text, str) else ("ok", "")
        if status == "refused":
            return detail
        if not bfcl_data.is_multi_turn(category) or status != "ok":
            continue
        calls = bfcl_calls.decode_execution(text)
        for call in calls if isinstance(calls, list) else []:
            problem = bfcl_calls.call_problem(call, names)
            name = call.split("(", 1)[0].strip()
            harmless = problem and problem.startswith("unknown function") and not (
                hasattr(builtins, name) or name in vars(multi_turn_utils))
            if problem and not harmless:
                return problem
    return None


def official_verdicts(category: str, outputs: Mapping[str, Raw], *, underscore_to_dot: bool = True,
                      on_unsafe: str = "raise") -> dict[str, bool]:
    """BFCL's own per-id verdicts on raw outputs of wheel entries of ``category``.

    ``outputs``: id -> the reply text (single-turn), or per user turn, per step, the reply texts
    (multi-turn, BFCL's result format: e.g. ``bfcl_multi.bfcl_result(state)`` of an episode).
    ``underscore_to_dot`` scores function names as exported by our tools (``a.b`` shown as
    ``a_b``). ``on_unsafe``: "raise" (an EnvError naming the ids) or "false" (those ids fail
    without reaching BFCL) for outputs the safety guard refuses.
    """
    category = bfcl_data.check_category(category)
    if on_unsafe not in ("raise", "false"):
        raise EnvError(f"on_unsafe must be 'raise' or 'false', got {on_unsafe!r}")
    evaluate_task = _evaluate_task()
    utils = bfcl_data.require_bfcl()
    entries = {e["id"]: e for e, _ in bfcl_data._wheel_entries(category)}
    unknown = sorted(set(outputs) - set(entries))
    if unknown:
        raise EnvError(f"ids not in BFCL {category}: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    names = {i: [f["name"] for f in entries[i]["function"]] + [
        f["name"] for fs in entries[i].get("missed_function", {}).values() for f in fs] for i in outputs}
    unsafe = {i: why for i in outputs if (why := _unsafe(category, outputs[i], names[i]))}
    if unsafe and on_unsafe == "raise":
        raise EnvError(f"refusing to feed unsafe outputs to BFCL's evaluator: {dict(list(unsafe.items())[:3])}")
    results = [{"id": i, "result": outputs[i]} for i in entries if i in outputs and i not in unsafe]
    verdicts = {i: False for i in unsafe}
    if not results:
        return verdicts
    model = "mctsagent-official-" + uuid.uuid4().hex[:12]
    bfcl_data.register_model_name(model, underscore_to_dot)
    group = utils.get_directory_structure_by_category(category)
    name = f"{VERSION_PREFIX}_{category}"
    try:
        with _LOCK, tempfile.TemporaryDirectory(prefix="mcts_agent_bfcl_eval_") as root:
            result_dir, score_dir = Path(root) / "result", Path(root) / "score"
            utils.write_list_of_dicts_to_file(f"{name}_result.json", results, result_dir / model / group)
            model_result = utils.load_file(result_dir / model / group / f"{name}_result.json", sort_by_id=True)
            with contextlib.redirect_stdout(io.StringIO()):
                evaluate_task(category, result_dir, score_dir, model_result, model, _PromptingHandler(), {},
                              allow_missing=True)
            lines = (score_dir / model / group / f"{name}_score.json").read_text().splitlines()
    finally:
        bfcl_calls.clear_instances(model)
        bfcl_data.unregister_model_name(model)
    failed = {json.loads(line)["id"] for line in lines[1:] if line.strip()}
    verdicts.update({r["id"]: r["id"] not in failed for r in results})
    return verdicts


# ----- reference replies (the gold written as model output) ----------------------------------
def _first_option(options: Sequence[Any]) -> tuple[bool, Any]:
    for o in options:
        if o != "":
            return True, o
    return False, None


def _gold_value(value: Any, schema: Mapping[str, Any]) -> Any:
    """dict params (and arrays of dicts) hold nested option lists in BFCL's possible answers."""
    if schema.get("type") == "dict" and isinstance(value, dict):
        return {k: _first_option(v)[1] for k, v in value.items() if isinstance(v, list) and _first_option(v)[0]}
    if schema.get("type") == "array" and schema.get("items", {}).get("type") == "dict" and isinstance(value, list):
        return [_gold_value(d, {"type": "dict"}) for d in value]
    return value


def reference_reply(task: Task) -> str:
    """A single-turn task's gold as a reply ``[f(a=1), ...]`` (tool names, a.b -> a_b; prose for irrelevance)."""
    if task.meta["category"] == "irrelevance":
        return f"None of the given functions can answer this request ({NO_CALL})."
    docs = {f["name"]: f for f in task.meta["functions"]}
    calls = []
    for call in bfcl_data.gold_of(task):
        (fname, params), = call.items()
        props = docs[fname]["parameters"]["properties"]
        required = docs[fname]["parameters"].get("required", [])
        args = []
        for p, options in params.items():
            if p not in props and "" in options:
                continue  # an optional param the schema lacks (parallel_multiple_12/26)
            has, v = _first_option(options)
            if has:
                args.append(f"{p}={_gold_value(v, props.get(p, {}))!r}")
            elif p in required and options == [""]:
                args.append(f"{p}=''")
        calls.append(f"{fname.replace('.', '_')}({', '.join(args)})")
    return "[" + ", ".join(calls) + "]"


def _signatures(task: Task) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for cls_name in task.meta["involved_classes"]:
        cls = getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[cls_name]), cls_name)
        for name, fn in inspect.getmembers(cls, inspect.isfunction):
            out[name] = [p for p in inspect.signature(fn).parameters if p != "self"]
    return out


def _keyword_call(call: str, params: Mapping[str, list[str]]) -> str:
    """A ground-truth call with positional arguments rewritten by name (BFCL's decoder drops positionals)."""
    node = ast.parse(call, mode="eval").body
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name), call
    names = params[node.func.id]
    args = [f"{names[i]}={ast.unparse(a)}" for i, a in enumerate(node.args)]
    args += [f"{k.arg}={ast.unparse(k.value)}" for k in node.keywords]
    return f"{node.func.id}({', '.join(args)})"


def reference_turns(task: Task) -> list[str | None]:
    """A multi-turn task's gold calls per user turn as replies ``[f(a=1), ...]``; None where the turn has none."""
    params = _signatures(task)
    return ["[" + ", ".join(_keyword_call(c, params) for c in turn) + "]" if turn else None
            for turn in bfcl_data.gold_of(task)]


def oracle_script(tasks: Sequence[Task], user: str = "User: ",
                  assistant: str = "\nAssistant:") -> Callable[[str, int], str]:
    """A ``ScriptedBackend`` script writing the gold of the prompt's task: single-turn, the reference
    reply; multi-turn, the current turn's gold calls, then a prose "Done." (also for turns with none).

    ``user`` / ``assistant`` are how the prompt marks those turns (``plain_chat``, ScriptedBackend's).
    """

    def script(prompt: str, i: int) -> str:
        task = next((t for t in tasks if user + t.question in prompt), None)
        if task is None:
            return "I do not know this task."
        if not bfcl_data.is_multi_turn(task.meta["category"]):
            return reference_reply(task)
        refs = reference_turns(task)
        texts = [user + task.question] + [user + user_turn_text(task, k) for k in range(1, len(refs))]
        turn = max(k for k, text in enumerate(texts) if text in prompt)
        tail = prompt[prompt.rindex(texts[turn]) + len(texts[turn]):]
        acted = tail.count(assistant) > 1  # an assistant turn before the one being written
        return "Done." if refs[turn] is None or acted else str(refs[turn])

    return script

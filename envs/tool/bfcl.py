"""``tool/bfcl-<category>``: BFCL's single-turn function-calling categories as an agent env.

The policy sees BFCL's own prompting instructions (reply ``[func(param=value, ...)]``, or say
so if no function fits) with the function docs passed as OpenAI-style tools through its
chat template. One action ends the episode when it is either

* a well-formed call list naming known functions with arguments that fit their schemas
  (answer: the canonical JSON of the decoded calls, so equal answers vote together), or
* a reply with no call at all (answer ``NO_CALL``: the right move for irrelevance).

A malformed call, an unknown function or parameter, a missing required parameter, a
wrong argument type, or text refused by the safety guard is an error observation and
the episode goes on (within ``max_steps``). The verdict is BFCL's own checker on the final
action text (``mcts_agent.envs.tool.bfcl_calls.single_turn_verdict``).
"""

from __future__ import annotations

import ast
import copy
from typing import Any, Mapping, Sequence

from mcts_agent.env import EnvState, Message, RewardMode, Task
from mcts_agent.envs.agent import AgentEnv, Outcome
from mcts_agent.envs.tool import bfcl_calls, bfcl_data
from mcts_agent.errors import EnvError

# bfcl_eval is imported only after bfcl_data, whose import isolates it (see there).
from bfcl_eval.constants.default_prompts import (OUTPUT_FORMAT_MAPPING, PARAM_TYPE_MAPPING,  # noqa: E402
                                                 PROMPT_STYLE_TEMPLATES, PROMPT_TEMPLATE_MAPPING)
from bfcl_eval.constants.enums import ModelStyle  # noqa: E402
from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI  # noqa: E402
from bfcl_eval.model_handler.utils import convert_to_tool  # noqa: E402

NO_CALL = "no function call"
"""The answer of an episode that ended with a reply holding no call."""
_STYLE = PROMPT_STYLE_TEMPLATES["classic"]
SYSTEM_PROMPT = PROMPT_TEMPLATE_MAPPING["plaintext"].format(
    persona=_STYLE["persona"], task=_STYLE["task"],
    tool_call_format=_STYLE["tool_call_no_tag"].format(output_format=OUTPUT_FORMAT_MAPPING["python"],
                                                       param_types=PARAM_TYPE_MAPPING["python"]),
    multiturn_behavior=_STYLE["multiturn_behavior"], available_tools="").strip()
"""BFCL's default prompting system prompt (its default format, classic style) without the function
list: the functions reach the model as tools, through its chat template."""
FORMAT_HINT = "Reply with the calls as [func_name(param=value, ...)], or in plain words if no function fits."

# BFCL type -> the Python types its checker accepts for it (exact types: a bool is not an integer).
_PY_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "float": (int, float),
                                          "boolean": (bool,), "array": (list,), "tuple": (list, tuple),
                                          "dict": (dict,)}


def bfcl_messages(task: Task, turn: int = 0) -> list[Message]:
    """BFCL's system prompt, then the messages of user turn ``turn`` (a task's own system text appended)."""
    msgs = [dict(m) for m in task.meta["turns"][turn]]
    if msgs and msgs[0]["role"] == "system":
        return [{"role": "system", "content": SYSTEM_PROMPT + "\n\n" + msgs[0]["content"]}] + msgs[1:]
    return [{"role": "system", "content": SYSTEM_PROMPT}] + msgs


def openai_tools(functions: Sequence[dict[str, Any]], category: str) -> list[dict[str, Any]]:
    """The docs as BFCL's generation step shows them (Python hint), in OpenAI tool form (a.b -> a_b)."""
    hinted = bfcl_data.require_bfcl()._func_doc_language_specific_pre_processing(copy.deepcopy(list(functions)),
                                                                                 category)
    return convert_to_tool(hinted, GORILLA_TO_OPENAPI, ModelStyle.OPENAI_COMPLETIONS)


def _literal_of(text: str, bfcl_type: str) -> bool:
    """Whether a string spells a literal of ``bfcl_type`` (e.g. '10' for an integer)."""
    if bfcl_type == "boolean" and text.strip().lower() in ("true", "false"):
        return True
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return type(value) in _PY_TYPES[bfcl_type]


def _type_problem(func: str, param: str, value: Any, schema: Mapping[str, Any]) -> str | None:
    t = schema.get("type")
    if t not in _PY_TYPES or value is None or type(value) in _PY_TYPES[t]:
        return None  # 'any', null, or the right type
    if t == "array" and type(value) is tuple:
        return f"{func}: parameter {param!r} is an array: write a list [...], not a tuple"
    if isinstance(value, str) and not _literal_of(value, t):
        return None  # BFCL reads such a string as a variable name
    return f"{func}: parameter {param!r} must be of type {t}, got {type(value).__name__} {value!r:.80}"


def schema_problem(calls: Sequence[Mapping[str, Any]], functions: Sequence[Mapping[str, Any]]) -> str | None:
    """What makes decoded calls wrong against the docs, as BFCL's checker would reject them, or None.

    A string passes for any type unless it spells a literal of another type ('10' for an
    integer): BFCL reads such strings as variable names. None passes too (nullable options).
    One gold in BFCL (simple_python_307) gives a bool to a string parameter, which BFCL
    accepts as a "variable" and this check does not.
    """
    docs = {f["name"].replace(".", "_"): f for f in functions}
    for call in calls:
        (name, args), = call.items()
        doc = docs.get(name)
        if doc is None:
            return f"unknown function {name!r}; available: {', '.join(sorted(docs))}"
        params = doc.get("parameters", {})
        props = params.get("properties", {})
        for p, value in args.items():
            if p not in props:
                return f"{name}: unknown parameter {p!r}; parameters: {', '.join(props) or 'none'}"
            problem = _type_problem(name, p, value, props[p])
            if problem:
                return problem
        missing = [p for p in params.get("required", []) if p not in args]
        if missing:
            return f"{name}: missing required parameter(s) {', '.join(map(repr, missing))}"
    return None


class BFCLBase(AgentEnv):
    """What every BFCL env shares: its category's tasks, BFCL's prompting instructions, the tools."""

    categories: tuple[str, ...] = ()
    default_max_steps = 3

    def __init__(self, tasks: Sequence[Task] | None = None, *, category: str = "simple_python",
                 data: str | None = None, limit: int | None = None, seed: int | None = None,
                 max_steps: int | None = None, reward_mode: RewardMode | str = RewardMode.NONE,
                 render_mode: str | None = None) -> None:
        self.category = bfcl_data.check_category(category, self.categories)
        if tasks is None:
            tasks = bfcl_data.load_bfcl(data, limit=limit, seed=seed, category=self.category)
        for t in tasks:
            bfcl_data.task_category(t, self.categories)
        super().__init__(tasks, max_steps=max_steps or self.default_max_steps, reward_mode=reward_mode,
                         render_mode=render_mode)

    def messages(self, task: Task) -> list[Message]:
        return bfcl_messages(task)

    def tools(self, task: Task) -> list[dict[str, Any]] | None:
        return openai_tools(task.meta["functions"], task.meta["category"])


class BFCLEnv(BFCLBase):
    """BFCL single-turn categories: one call list (or a refusal) per task, judged by BFCL's own checker."""

    categories = bfcl_data.BFCL_SINGLE_TURN

    def start(self, task: Task) -> tuple[Any, Any]:
        bfcl_data.task_category(task, bfcl_data.BFCL_SINGLE_TURN)
        return None, None

    def act(self, state: EnvState, action: str) -> Outcome:
        functions = state.task.meta["functions"]
        decoded = bfcl_calls.decode_calls(action)
        if isinstance(decoded, str):
            names = [f["name"].replace(".", "_") for f in functions] + [f["name"] for f in functions]
            if decoded.startswith("refused") or bfcl_calls.looks_like_call(action, names):
                return Outcome(f"Error: {decoded}. {FORMAT_HINT}")
            return self._end(state, action, NO_CALL, "No function call: the reply ends the episode.")
        if not decoded:
            return self._end(state, action, NO_CALL, "No function call: the reply ends the episode.")
        problem = schema_problem(decoded, functions)
        if problem:
            return Outcome(f"Error: {problem}. {FORMAT_HINT}")
        return self._end(state, action, bfcl_calls.canonical(decoded), "Function calls recorded.")

    def _end(self, state: EnvState, action: str, answer: str, observation: str) -> Outcome:
        reward = 0.0
        if self.reward_mode is RewardMode.OUTCOME and state.task.answer is not None:
            reward = float(bfcl_calls.single_turn_verdict(state.task, action)[0])
        return Outcome(observation, terminated=True, answer=answer, reward=reward)

    def verify_state(self, state: EnvState, task: Task) -> bool:
        if not state.terminated or not state.turns:
            return False
        if task.answer is None:
            raise EnvError(f"task {task.id!r} has no gold answer: verify with the original task, not the search view")
        return bfcl_calls.single_turn_verdict(task, state.turns[-1].action)[0]

"""``tool/bfcl-multi_turn_*``: BFCL's multi-turn categories on BFCL's own stateful backends.

An episode walks through the task's user turns. In a turn each action is either

* calls (``[cd(folder='x'), ls()]``): executed on the backends, the observation (role
  "tool") is BFCL's own rendering of the results;
* a reply with no call: the turn is over; the observation (role "user") is the next user
  turn (for miss_func's empty turn: BFCL's prompting text revealing the held-out functions),
  and after the last turn the episode terminates;
* a malformed call, an unknown function, or a call refused by the safety guard: an error
  observation (role "tool"); nothing runs and the turn goes on. As in BFCL, miss_func's
  held-out functions run even before their reveal (one gold answer needs that), but no
  prompt or error message names them before it.

The tools are the task's initial functions (``tools(task)`` cannot change with the state);
miss_func's held-out docs reach the policy in BFCL's reveal message, as in BFCL's prompting mode.

``payload`` (JSON) is the current turn and the executed calls per turn per step; ``live`` is
the backend instances, deep-copied before every action so states never share them, and
rebuilt by replaying ``payload`` when absent (e.g. after a JSON round trip). ``verify_state``
is BFCL's ``multi_turn_checker`` over the recorded calls. Undecodable replies are never
recorded, as BFCL drops them from the scored result; replies the env refused (unknown
function, guard) did not happen in this world and are left out too, so ``verify_state``
equals BFCL's own evaluation of ``bfcl_result(state)``.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Sequence

from mcts_agent.env import EnvState, RewardMode, Task
from mcts_agent.envs.agent import Outcome
from mcts_agent.envs.tool import bfcl_calls, bfcl_data
from mcts_agent.envs.tool.bfcl import FORMAT_HINT, BFCLBase
from mcts_agent.errors import EnvError

# bfcl_eval is imported only after bfcl_data, whose import isolates it (see there).
from bfcl_eval.constants.default_prompts import DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING  # noqa: E402
from bfcl_eval.model_handler.utils import format_execution_results_prompting  # noqa: E402

END_OF_TASK = "The user has no further requests."
ERROR_PREFIX = "Error: "  # starts every observation of an action the env refused (nothing ran)


def available_functions(task: Task, turn: int) -> list[str]:
    """The functions shown to the policy by ``turn``: the task's, plus held-out ones revealed by then."""
    held = task.meta.get("missed_function", {})
    return [f["name"] for f in task.meta["functions"]] + [
        f["name"] for t, fs in held.items() if int(t) <= turn for f in fs]


def user_turn_text(task: Task, turn: int) -> str:
    """What the user says at ``turn`` (miss_func's empty turn: BFCL's text revealing the held-out docs)."""
    held = task.meta.get("missed_function", {})
    if str(turn) in held:
        return DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_PROMPTING.format(functions=held[str(turn)])
    return "\n\n".join(m["content"] for m in task.meta["turns"][turn])


def bfcl_result(state: EnvState) -> list[list[str]]:
    """The episode in BFCL's result format (per user turn, per step, the reply texts) without the replies
    the env refused: BFCL's own evaluation of it (``bfcl_official``) gives ``verify_state``'s verdict."""
    out: list[list[str]] = [[]]
    for t in state.turns:
        if t.role == "tool" and (t.observation or "").startswith(ERROR_PREFIX):
            continue
        out[-1].append(t.action)
        if t.role == "user" and t.observation != END_OF_TASK:
            out.append([])
    return out


class BFCLMultiTurnEnv(BFCLBase):
    """BFCL multi-turn categories (base, miss_func, miss_param), judged by BFCL's multi_turn_checker."""

    categories = bfcl_data.BFCL_MULTI_TURN
    default_max_steps = 40

    def __init__(self, tasks: Sequence[Task] | None = None, *, category: str = "multi_turn_base", **kwargs: Any) -> None:
        super().__init__(tasks, category=category, **kwargs)

    def start(self, task: Task) -> tuple[Any, Any]:
        bfcl_data.task_category(task, bfcl_data.BFCL_MULTI_TURN)
        return {"turn": 0, "calls": [[]], "finished": False}, bfcl_calls.build_backends(task)

    def backends(self, state: EnvState) -> dict[str, Any]:
        """The state's backend instances: ``state.live``, or rebuilt by replaying the recorded calls.

        Treat the result as read-only; ``act`` deep-copies it before every action.
        """
        if state.live is not None:
            return state.live
        live = bfcl_calls.build_backends(state.task)
        allowed = bfcl_calls.all_function_names(state.task)
        for turn in state.payload["calls"]:
            for step in turn:
                bfcl_calls.execute(live, step, allowed)
        return live

    def act(self, state: EnvState, action: str) -> Outcome:
        task, p = state.task, state.payload
        turn = p["turn"]
        shown = available_functions(task, turn)
        allowed = bfcl_calls.all_function_names(task)  # BFCL lets held-out functions run before their reveal
        live = copy.deepcopy(self.backends(state))  # the new state's own instances, whatever happens
        decoded = bfcl_calls.decode_execution(action)
        if isinstance(decoded, str):
            if decoded.startswith("refused") or bfcl_calls.looks_like_call(action, shown):
                return Outcome(f"{ERROR_PREFIX}{decoded}. Nothing was executed. {FORMAT_HINT}", p, live)
            return self._end_turn(state, live)
        if bfcl_calls.is_empty_step(decoded):
            return self._end_turn(state, live)
        problem = next((q for q in (bfcl_calls.call_problem(c, allowed, shown) for c in decoded) if q), None)
        if problem:
            return Outcome(f"{ERROR_PREFIX}{problem}. Nothing was executed. {FORMAT_HINT}", p, live)
        results = bfcl_calls.execute(live, decoded, allowed)
        calls = copy.deepcopy(p["calls"])
        calls[turn].append(list(decoded))
        observation = format_execution_results_prompting({}, results, {"model_responses_decoded": decoded})
        return Outcome(observation, {**p, "calls": calls}, live)

    def _end_turn(self, state: EnvState, live: Any) -> Outcome:
        task, p = state.task, state.payload
        turn = p["turn"] + 1
        if turn < len(task.meta["turns"]):
            payload = {**p, "turn": turn, "calls": copy.deepcopy(p["calls"]) + [[]]}
            return Outcome(user_turn_text(task, turn), payload, live, role="user")
        payload = {**p, "finished": True}
        reward = 0.0
        if self.reward_mode is RewardMode.OUTCOME and task.answer is not None:
            reward = float(bfcl_calls.multi_turn_verdict(task, payload["calls"])[0])
        return Outcome(END_OF_TASK, payload, live, reward=reward, terminated=True, role="user",
                       answer=json.dumps(payload["calls"], ensure_ascii=False))

    def verify_state(self, state: EnvState, task: Task) -> bool:
        if not (state.terminated and isinstance(state.payload, dict) and state.payload.get("finished")):
            return False
        if task.answer is None:
            raise EnvError(f"task {task.id!r} has no gold answer: verify with the original task, not the search view")
        return bfcl_calls.multi_turn_verdict(task, state.payload["calls"])[0]

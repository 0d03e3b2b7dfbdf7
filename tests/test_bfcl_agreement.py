"""Our BFCL verdicts equal BFCL's OWN evaluation (``eval_runner.evaluate_task``) on the same raw outputs.

Outputs over all 9 categories: the gold written as a reply, and perturbations of it (values,
types, names, counts, prose, empty, truncated, missing/extra/wrong turns, positional
arguments). Multi-turn episodes are also played through the env, and ``verify_state`` is
compared with BFCL's verdict on the episode's action texts.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import pytest

pytest.importorskip("bfcl_eval")
pytest.importorskip("pandas")

from mcts_agent.envs.tool import bfcl_calls, bfcl_data  # noqa: E402
from mcts_agent.envs.tool.bfcl_multi import BFCLMultiTurnEnv, bfcl_result  # noqa: E402
from mcts_agent.envs.tool.bfcl_official import official_verdicts, reference_reply, reference_turns  # noqa: E402

SINGLE = ("simple_python", "multiple", "parallel", "parallel_multiple", "live_simple")
MULTI = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param")


def _bump_value(text: str) -> str:
    """Change the first number (+1) or, failing that, the first string value."""
    out, n = re.subn(r"=(-?\d+)(?=[,)\]])", lambda m: f"={int(m.group(1)) + 1}", text, count=1)
    return out if n else re.sub(r"='([^']*)'", r"='\1 zz'", text, count=1)


def _stringify_number(text: str) -> str:
    out, n = re.subn(r"=(-?\d+(?:\.\d+)?)(?=[,)\]])", r"='\1'", text, count=1)
    return out if n else text.replace("=", "=[", 1).replace(",", "],", 1)


SINGLE_VARIANTS: list[Callable[[str], str]] = [
    lambda r: r,  # correct
    lambda r: "I am not sure which function to call here.",  # prose
    lambda r: "",  # empty
    lambda r: "[]",  # no call
    lambda r: r[: max(1, len(r) // 2)],  # truncated
    _bump_value,  # wrong value
    _stringify_number,  # wrong type
    lambda r: re.sub(r"^\[(\w)", r"[x_\1", r),  # unknown function name
    lambda r: r[:-1] + ", " + r[1:],  # one call too many
    lambda r: r[1:-1],  # no brackets (BFCL adds them)
    lambda r: "```\n" + r + "\n```",  # fenced
    lambda r: re.sub(r", \w+=[^,\]]*\)", ")", r, count=1),  # a parameter dropped
]
IRRELEVANCE_VARIANTS = ["No function here fits this request.", "", "[]", "[x(]", "[unknown_tool(a=1)]",
                        "I'd call nothing.", "[]\n", "```\n[]\n```"]


def _single_outputs(category: str, n: int) -> tuple[list[Any], dict[str, str]]:
    tasks = bfcl_data.load_bfcl(None, category=category, limit=n, seed=7)
    if category == "irrelevance":
        docs = [t.meta["functions"][0]["name"].replace(".", "_") for t in tasks]
        outs = {t.id: (IRRELEVANCE_VARIANTS[i % len(IRRELEVANCE_VARIANTS)] if i % 3 else f"[{docs[i]}(x=1)]")
                for i, t in enumerate(tasks)}
        return tasks, outs
    return tasks, {t.id: SINGLE_VARIANTS[i % len(SINGLE_VARIANTS)](reference_reply(t)) for i, t in enumerate(tasks)}


def _multi_turns(task: Any, k: int) -> list[list[str]]:
    refs = reference_turns(task)
    turns = [[r, "Done."] if r else ["Nothing I can do."] for r in refs]
    last = max(i for i, r in enumerate(refs) if r)
    if k == 1:
        turns[0] = ["Sorry, I cannot do that."]  # a turn without calls
    elif k == 2:
        turns[last] = [re.sub(r"='([^']*)'", r"='\1x'", refs[last], count=1)]  # a wrong string value
    elif k == 3:
        turns = turns[:-1]  # a missing turn
    elif k == 4:
        turns = [[f"[{c}]" for c in bfcl_calls.decode_execution(r)] + ["Done."] if r else [] for r in refs]
    elif k == 5:
        gold = bfcl_data.gold_of(task)
        turns = [["[" + ", ".join(g) + "]"] if g else [] for g in gold]  # the gold's own positional args
    elif k == 6:
        turns[last] = ["[nosuch_tool(x=1)]"] + turns[last]  # an extra undefined call
    elif k == 7:
        turns[last] = [refs[last][: len(refs[last]) // 2]] + turns[last]  # truncated, then right
    elif k == 8:
        turns = turns + [["Extra turn."]]  # one turn too many
    return turns


def _compare(category: str, ours: dict[str, bool], outputs: dict[str, Any]) -> tuple[int, list[str]]:
    official = official_verdicts(category, outputs)
    assert set(official) == set(ours)
    return len(ours), [f"{category}:{i} ours={ours[i]} bfcl={official[i]}" for i in ours if ours[i] != official[i]]


def test_verdicts_agree_with_bfcl_evaluate_task() -> None:
    total, disagreements, verdicts = 0, [], []
    for cat in SINGLE + ("irrelevance",):
        tasks, outputs = _single_outputs(cat, 30)
        ours = {t.id: bfcl_calls.single_turn_verdict(t, outputs[t.id])[0] for t in tasks}
        n, dis = _compare(cat, ours, outputs)
        total, disagreements, verdicts = total + n, disagreements + dis, verdicts + list(ours.values())
    for cat in MULTI:
        tasks = bfcl_data.load_bfcl(None, category=cat, limit=18, seed=3)
        outputs = {t.id: _multi_turns(t, i % 9) for i, t in enumerate(tasks)}
        ours = {t.id: bfcl_calls.multi_turn_verdict(t, outputs[t.id])[0] for t in tasks}
        n, dis = _compare(cat, ours, outputs)
        total, disagreements, verdicts = total + n, disagreements + dis, verdicts + list(ours.values())
    print(f"BFCL agreement: {total - len(disagreements)}/{total} outputs")
    assert total >= 200
    assert not disagreements, disagreements
    assert any(verdicts) and not all(verdicts)


def _play(env: BFCLMultiTurnEnv, task: Any, turns: list[list[str]]) -> Any:
    """Step the env through per-turn texts, each turn ended by a prose reply."""
    state = env.initial_state(task)
    for steps in turns:
        for text in steps + ["Done."]:
            state, *_ = env.transition(state, text)
            if state.turns[-1].role == "user" or state.done:
                break
        if state.done:
            break
    return state


def test_env_episodes_agree_with_bfcl_evaluate_task() -> None:
    for cat in MULTI:
        env = BFCLMultiTurnEnv(category=cat, limit=8)
        ours, outputs = {}, {}
        for i, task in enumerate(env.tasks):
            turns = _multi_turns(task, [0, 1, 2, 3, 4, 6, 7, 9][i])
            if i == 7:  # an unknown function beside a real call: the env runs neither
                turns[0] = [turns[0][0][:-1] + ", nosuch_tool(x=1)]"] + turns[0]
            state = _play(env, task, turns)
            ours[task.id], outputs[task.id] = env.verify_state(state, task), bfcl_result(state)
            assert bfcl_calls.decode_steps(outputs[task.id]) == state.payload["calls"]
        n, dis = _compare(cat, ours, outputs)
        assert not dis, dis
        assert any(ours.values()) and not all(ours.values()), (cat, ours)


def test_official_evaluation_has_no_stale_state() -> None:
    task = bfcl_data.load_bfcl(None, category="multi_turn_base", limit=1)[0]
    right = _multi_turns(task, 0)
    wrong = [["[cd(folder='nowhere')]"]] + right[1:]
    got = [official_verdicts(task.meta["category"], {task.id: x})[task.id] for x in (wrong, right, wrong, right)]
    assert got == [False, True, False, True]

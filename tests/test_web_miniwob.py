"""MiniWoB++ in real headless chromium: the oracle through the planner, error observations, replay and staleness.

One env (two live browsers, every featured task x 2 seeds) is shared by the module. Install the
browser with ``scripts/install_system_deps.sh``; these tests skip only where it is missing.
"""

from __future__ import annotations

import pickle
import urllib.request
from dataclasses import replace
from typing import Iterator

import pytest

from mcts_agent.envs.web.browser import Browser, browser_available
from mcts_agent.envs.web.miniwob import FEATURED, MiniWoBEnv
from mcts_agent.envs.web.oracle import ORACLES, exploring_script, oracle_action, oracle_script
from mcts_agent.envs.web.page import EPISODE_MAX_TIME_MS, MiniWoBPage
from mcts_agent.errors import EnvError
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.search import SearchConfig, run_search

REASON = browser_available()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(REASON is not None, reason=str(REASON))]


@pytest.fixture(scope="module")
def env() -> Iterator[MiniWoBEnv]:
    e = MiniWoBEnv(task=list(FEATURED), seeds=2, pool_size=2, max_steps=8)
    yield e
    e.close()


def test_the_oracle_solves_every_featured_task_through_the_planner(env: MiniWoBEnv) -> None:
    assert sorted(ORACLES) == sorted(FEATURED) and len(env.tasks) == 2 * len(FEATURED)
    trees = run_search(env.tasks, env, ScriptedBackend(oracle_script(env.tasks)),
                       SearchConfig(algo="greedy", max_step_tokens=200, env_workers=2))
    finals = [t.nodes[t.answer_node].state for t in trees]
    assert [env.verify_state(s, task) for s, task in zip(finals, env.tasks)] == [True] * len(env.tasks)
    assert {s.payload["raw_reward"] for s in finals} == {1.0}  # the raw reward, not one discounted by time
    assert all(len(s.payload["hashes"]) == len(s.turns) + 1 for s in finals)
    assert env.pool.stats.created == 2 and env.pool.stats.mismatches == 0  # both browsers stepped
    page = env.pool._slots[0].instance
    assert page.base_url.startswith("http://127.0.0.1:")
    assert page.browser.driver.execute_script("return core.EPISODE_MAX_TIME;") == EPISODE_MAX_TIME_MS


def test_bad_actions_are_error_observations_and_the_episode_goes_on(env: MiniWoBEnv) -> None:
    index = next(i for i, t in enumerate(env.tasks) if t.meta["task"] == "login-user")
    obs, _ = env.reset(options={"task_index": index})
    page = obs
    button = next(line for line in page.splitlines() if " button " in line).split("]")[0].strip(" [")
    field = next(line for line in page.splitlines() if "id=username" in line).split("]")[0].strip(" [")
    for action, error in [
        ("Click the login button", "Error: cannot parse action 'Click the login button'; expected click(ref)"),
        ("click(999)", "Error: no element [999] in the latest page; use a ref shown in brackets."),
        (f'type({button}, "x")', f"Error: type() needs a text input or textarea; [{button}] is a button."),
        (f'select({field}, "x")', f'Error: select() needs a select list; [{field}] is a input: use click({field})'),
    ]:
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs.startswith(error) and not terminated and not truncated and info["valid"] is False
    for k in range(4):
        obs, reward, terminated, truncated, info = env.step(oracle_action("login-user", page, k))
        if terminated:
            break
        page = obs
    assert terminated and obs == "The episode is over." and reward == 0.0  # evaluation mode: no verdict shown
    assert env.verify_state(env.snapshot(), env.tasks[index])


def test_mcts_over_replayed_browsers_matches_fresh_replays(env: MiniWoBEnv) -> None:
    tasks = [t for t in env.tasks if t.meta["task"] in ("click-checkboxes", "login-user")][:2]
    trees = run_search(tasks, env, ScriptedBackend(exploring_script(tasks)),
                       SearchConfig(algo="mcts", simulations=8, branching=2, env_workers=2, max_step_tokens=200))
    st = env.pool.stats
    assert st.reuse["prefix"] + st.reuse["exact"] > 0 and st.mismatches == 0
    fresh = MiniWoBPage(env.pool._slots[0].instance.base_url)
    try:
        checked = 0
        for tree, task in zip(trees, tasks):
            for node in tree.nodes[1:]:
                if node.state.payload.get("done"):
                    continue
                res = fresh.reset((task.meta["task"], task.meta["seed"]))
                for action in tree.steps(node.id):
                    res = fresh.step(action)
                assert res.hash == node.state.payload["hashes"][-1]  # the page replay reached is the recorded one
                checked += 1
        assert checked >= 3
    finally:
        fresh.close()


def test_a_replay_that_sees_another_page_marks_the_node_stale(env: MiniWoBEnv) -> None:
    task = next(t for t in env.tasks if t.meta["task"] == "login-user")
    state = env.initial_state(task)
    first, *_ = env.transition(state, oracle_action(task.meta["task"], task.question, 0) + "  ")
    assert not first.done and first.payload["hashes"][0] == task.meta["hash"]
    forged = replace(first, payload={**first.payload, "hashes": [first.payload["hashes"][0], "0" * 16]})
    nxt, _, terminated, _, info = env.transition(forged, "click(1)")
    assert terminated and info["stale"] and nxt.payload["stale"] and not env.verify_state(nxt, task)
    assert nxt.turns[-1].observation.startswith("Error: this page cannot be reached again by replay (stale node)")


def test_bad_options_name_the_value_and_what_was_expected() -> None:
    with pytest.raises(EnvError, match=r"unknown MiniWoB\+\+ task 'click-buton' \(did you mean click-button"):
        MiniWoBEnv(task="click-buton")
    with pytest.raises(EnvError, match="pool_size must be an int >= 1 \\(live browsers\\), got 0"):
        MiniWoBEnv(pool_size=0)
    with pytest.raises(EnvError, match=r"serve must be one of \['http', 'file'\], got 'ftp'"):
        MiniWoBEnv(serve="ftp")
    with pytest.raises(EnvError, match="seeds must be a count >= 1 or a non-empty list of ints >= 0, got \\[-1\\]"):
        MiniWoBEnv(seeds=[-1])
    with pytest.raises(EnvError, match="chromium binary '/nonexistent/chromium' is not an executable file"):
        Browser(chrome_binary="/nonexistent/chromium")
    with pytest.raises(EnvError, match="reload must be one of \\['task', 'always'\\], got 'never'"):
        MiniWoBPage("http://127.0.0.1:1/", reload="never")


def test_selenium_manager_never_runs_and_the_file_fallback_works(monkeypatch: pytest.MonkeyPatch) -> None:
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def refuse(self: object, args: list) -> dict:
        raise AssertionError(f"Selenium Manager was asked for a driver: {args}")

    monkeypatch.setattr(SeleniumManager, "binary_paths", refuse)
    with MiniWoBEnv(task="enter-text", seeds=1, pool_size=1, serve="file") as e:
        obs, _ = e.reset(seed=0)
        for k in range(3):
            obs, _, terminated, *_ = e.step(oracle_action("enter-text", obs, k))
            if terminated:
                break
        assert terminated and e.verify_state(e.snapshot(), e.tasks[0]) and e.server is None
        assert e.pool._slots[0].instance.base_url.startswith("file://")
        copy = pickle.loads(pickle.dumps(e))  # what a Ray or process worker gets: options and tasks
        try:
            assert copy.tasks == e.tasks and copy.serve == "file" and copy.pool is not e.pool
            first = copy.reset(seed=0)[0]
            assert first == e.reset(seed=0)[0]
            action = oracle_action("enter-text", first, 0)
            assert copy.step(action)[0] == e.step(action)[0]  # stepped in a browser of its own
            assert copy.pool._slots[0].instance.browser is not e.pool._slots[0].instance.browser
        finally:
            copy.close()


def test_the_page_server_listens_on_loopback_until_close() -> None:
    e = MiniWoBEnv(task="click-button", seeds=1, pool_size=1)
    url = e._base_url()
    assert url.startswith("http://127.0.0.1:")
    assert b"core.js" in urllib.request.urlopen(url + "miniwob/click-button.html", timeout=5).read()
    e.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "miniwob/click-button.html", timeout=5)

"""The worked example in docs/add_env.md runs as written and passes Gymnasium's env checker."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from mcts_agent import envs

DOC = Path(__file__).resolve().parents[1] / "docs" / "add_env.md"


def example_code() -> str:
    """The first ```python block of the doc."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert blocks, f"{DOC} has no ```python block"
    return blocks[0]


@pytest.fixture
def example_namespace():
    namespace: dict = {"__name__": "add_env_example"}
    try:
        exec(compile(example_code(), str(DOC), "exec"), namespace)  # noqa: S102 - our own doc
        yield namespace
    finally:
        if "demo/units" in envs.list_envs():
            envs.unregister_env("demo/units")


def test_example_is_short() -> None:
    assert len(example_code().strip().splitlines()) < 60


def test_example_runs_and_passes_check_env(example_namespace: dict) -> None:
    assert "demo/units" in envs.list_envs()
    env = envs.make("demo/units", n=3, seed=1)
    assert isinstance(env, example_namespace["UnitEnv"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    loud = [str(w.message) for w in caught if "render fps" not in str(w.message)]
    assert not loud, loud
    wrapped = gymnasium.make("demo/units-v0", n=2, reward_mode="outcome")
    obs, _ = wrapped.reset(seed=0)
    assert obs.startswith("Convert ")
    assert wrapped.step("The answer is " + wrapped.unwrapped.snapshot().task.answer)[1:3] == (1.0, True)


def test_example_unregisters_cleanly(example_namespace: dict) -> None:
    envs.unregister_env("demo/units")
    assert "demo/units" not in envs.list_envs()
    with pytest.raises(gymnasium.error.Error):
        gymnasium.make("demo/units-v0")


def agent_example_code() -> str:
    """The second ```python block of the doc: the multi-turn env."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) >= 2, f"{DOC} has no multi-turn example"
    return blocks[1]


def test_agent_example_is_short_runs_and_searches() -> None:
    from mcts_agent.llm.scripted import ScriptedBackend
    from mcts_agent.search import SearchConfig, run_search

    code = agent_example_code()
    assert len(code.strip().splitlines()) < 80
    namespace: dict = {"__name__": "add_agent_env_example"}
    try:
        exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own doc
        env = envs.make("demo/capitals", max_steps=4)
        check_env(env, skip_render_check=True)
        prompt_seen: list[str] = []

        def script(prompt: str, i: int) -> str:
            prompt_seen.append(prompt)
            country = re.search(r"capital of (\w+)\?", prompt).group(1)
            return f'answer("{prompt.rsplit("Tool: ", 1)[1].split(chr(10))[0]}")' if "Tool: " in prompt \
                else f'lookup("{country}")'

        trees = run_search(env.tasks, env, ScriptedBackend(script), SearchConfig(algo="greedy"))
        assert all(env.verify_state(t.nodes[t.answer_node].state, task) for t, task in zip(trees, env.tasks))
        assert '"name": "lookup"' in prompt_seen[0]  # the tool schemas reach the policy's prompt
    finally:
        if "demo/capitals" in envs.list_envs():
            envs.unregister_env("demo/capitals")

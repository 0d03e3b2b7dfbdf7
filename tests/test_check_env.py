"""Gymnasium's env checker over EVERY registered env (entries added later are covered too).

Each registry entry may declare ``test_kwargs`` (e.g. a couple of tasks, or a sandbox
config) so that its env can ``reset()`` without options, as ``check_env`` requires.
"""

from __future__ import annotations

import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

from mcts_agent import envs
from mcts_agent.envs.registry import check_kwargs

# Text envs render to a string; "render_fps" means nothing for them.
_HARMLESS = ("No render fps was declared",)


def _check_quietly(env: gymnasium.Env) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    loud = [str(w.message) for w in caught if not any(h in str(w.message) for h in _HARMLESS)]
    assert not loud, loud


@pytest.mark.parametrize("name", envs.list_envs())
def test_check_env_on_envs_make(name: str) -> None:
    env = envs.make(name, **check_kwargs(name))
    assert isinstance(env, envs.TextEnv) and env.unwrapped is env  # bare: search can snapshot/restore
    _check_quietly(env)
    env.close()


@pytest.mark.parametrize("name", envs.list_envs())
def test_check_env_on_gymnasium_make(name: str) -> None:
    entry = envs.get_entry(name)
    env = gymnasium.make(entry.gym_id, **check_kwargs(name))
    assert isinstance(env.unwrapped, envs.TextEnv)
    _check_quietly(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.close()


def test_every_entry_has_a_gymnasium_id() -> None:
    for name in envs.list_envs():
        entry = envs.get_entry(name)
        assert gymnasium.spec(entry.gym_id).entry_point == entry.entry_point
        namespace, _, version = gymnasium.envs.registration.parse_env_id(entry.gym_id)
        assert namespace == "mcts_agent" and version is not None, entry.gym_id

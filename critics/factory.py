"""Build a critic from its CLI name: ``make_critic("self-eval", backend, env)``."""

from __future__ import annotations

import dataclasses
from typing import Any

from mcts_agent.critic import Critic
from mcts_agent.critics.constant import ConstantCritic
from mcts_agent.critics.ensemble import EnsembleCritic
from mcts_agent.critics.judge import JudgeConfig, LLMJudgeCritic
from mcts_agent.critics.rollout import RolloutConfig, RolloutCritic
from mcts_agent.critics.self_eval import SelfEvalConfig, SelfEvalCritic
from mcts_agent.critics.verifier import OutcomeVerifierCritic, VerifierConfig
from mcts_agent.errors import ConfigError, CriticError

CRITICS = ("self-eval", "verifier", "rollout", "judge", "ensemble", "none")
_SPEC_EXAMPLE = "'self-eval:0.5,verifier:0.5'"


def make_critic(name: str, backend: Any = None, env: Any = None, **kwargs: Any) -> Critic:
    """The critic called ``name``, configured by ``kwargs`` (fields of its config dataclass).

    Names: ``self-eval``, ``verifier`` (kwargs: ``fallback`` = a critic name or Critic;
    ``reward_mode`` when no env is given), ``rollout`` (``inner`` = a critic name, Critic or
    None; default ``self-eval``), ``judge``, ``none`` (constant 0.5, or ``value=``), and
    ``ensemble`` with ``spec="self-eval:0.5,verifier:0.5"`` (a name holding ``:`` or ``,``
    is read as such a spec too; ``member_kwargs={"judge": {...}}`` configures members).
    """
    if not isinstance(name, str):
        raise CriticError(f"critic name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    if key == "ensemble" or ":" in key or "," in key:
        spec = kwargs.pop("spec", None) if key == "ensemble" else key
        if spec is None:
            raise CriticError(f"critic 'ensemble' needs spec=, e.g. {_SPEC_EXAMPLE}")
        member_kwargs = kwargs.pop("member_kwargs", {}) or {}
        _no_extra("ensemble", kwargs)
        return EnsembleCritic([(make_critic(n, backend, env, **member_kwargs.get(n, {})), w)
                               for n, w in parse_ensemble_spec(spec)])
    if key == "none":
        value = kwargs.pop("value", 0.5)
        _no_extra("none", kwargs)
        return ConstantCritic(value)
    if key == "self-eval":
        return SelfEvalCritic(_need_backend(key, backend), _config(key, SelfEvalConfig, kwargs))
    if key == "judge":
        return LLMJudgeCritic(_need_backend(key, backend), _config(key, JudgeConfig, kwargs))
    if key == "verifier":
        fallback = _sub_critic(kwargs.pop("fallback", None), backend, env)
        mode = kwargs.pop("reward_mode", None) or getattr(env, "reward_mode", None)
        if mode is None:
            raise CriticError("critic 'verifier' needs an env (for its reward mode) or reward_mode=")
        return OutcomeVerifierCritic(fallback, reward_mode=mode, config=_config(key, VerifierConfig, kwargs))
    if key == "rollout":
        inner = _sub_critic(kwargs.pop("inner", "self-eval"), backend, env)
        if env is None:
            raise CriticError("critic 'rollout' needs an env to replay its rollouts in")
        return RolloutCritic(_need_backend(key, backend), env, inner, _config(key, RolloutConfig, kwargs))
    raise CriticError(f"unknown critic {name!r}; expected one of {list(CRITICS)} or an ensemble spec like {_SPEC_EXAMPLE}")


def parse_ensemble_spec(spec: str) -> list[tuple[str, float]]:
    """``"self-eval:0.5,verifier:0.5"`` -> ``[("self-eval", 0.5), ("verifier", 0.5)]``; weight 1 if omitted."""
    members: list[tuple[str, float]] = []
    for part in spec.split(","):
        part = part.strip()
        name, _, weight = part.partition(":")
        name = name.strip().lower()
        if not name:
            raise CriticError(f"ensemble spec {spec!r} has an empty member; expected e.g. {_SPEC_EXAMPLE}")
        if name not in CRITICS or name == "ensemble":
            known = [c for c in CRITICS if c != "ensemble"]
            raise CriticError(f"ensemble spec {spec!r} names unknown member {name!r}; expected one of {known}")
        try:
            w = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise CriticError(f"ensemble spec {spec!r} gives {name!r} the weight {weight.strip()!r}; expected a number") from None
        members.append((name, w))
    return members


def _sub_critic(spec: Any, backend: Any, env: Any) -> Critic | None:
    if spec is None or isinstance(spec, Critic):
        return spec
    return make_critic(spec, backend, env)


def _need_backend(name: str, backend: Any) -> Any:
    if backend is None:
        raise CriticError(f"critic {name!r} needs a backend (a model to ask)")
    return backend


def _config(name: str, cls: type, kwargs: dict[str, Any]) -> Any:
    fields = {f.name for f in dataclasses.fields(cls)}
    _no_extra(name, {k: v for k, v in kwargs.items() if k not in fields}, sorted(fields))
    return cls(**kwargs)


def _no_extra(name: str, extra: dict[str, Any], allowed: list[str] | None = None) -> None:
    if extra:
        hint = f"; expected some of {allowed}" if allowed else ""
        raise ConfigError(f"critic {name!r} got unknown options {sorted(extra)}{hint}")

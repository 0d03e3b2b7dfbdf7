"""Build a critic from its CLI name: ``make_critic("self-eval", backend, env)``.

Spec syntax: ``NAME`` or, for trained critics, ``NAME:PATH`` (``prm:runs/critic``); an
ensemble joins members with ``,`` and gives each an optional weight after a last ``:``
(``self-eval:0.5,prm:runs/critic:0.5``). A trained critic's text after ``NAME:`` is its path
unless its last ``:``-part is a number (the weight); write ``prm:PATH:1`` for a path that ends
in ``:<number>``. Paths may not contain ``,``; names are case-insensitive, paths are not.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mcts_agent.critic import Critic
from mcts_agent.critics.constant import ConstantCritic
from mcts_agent.critics.ensemble import EnsembleCritic
from mcts_agent.critics.judge import JudgeConfig, LLMJudgeCritic
from mcts_agent.critics.learned import PRMCritic, ValueCritic
from mcts_agent.critics.rollout import RolloutConfig, RolloutCritic
from mcts_agent.critics.self_eval import SelfEvalConfig, SelfEvalCritic
from mcts_agent.critics.verifier import OutcomeVerifierCritic, VerifierConfig
from mcts_agent.errors import ConfigError, CriticError

CRITICS = ("self-eval", "verifier", "rollout", "judge", "self-eval-turn", "prm", "value", "ensemble", "none")
PATH_CRITICS = {"prm": PRMCritic, "value": ValueCritic}  # trained critics, loaded from a directory
_SPEC_EXAMPLE = "'self-eval:0.5,verifier:0.5'"


def make_critic(name: str, backend: Any = None, env: Any = None, **kwargs: Any) -> Critic:
    """The critic called ``name``, configured by ``kwargs`` (fields of its config dataclass).

    Names: ``self-eval`` (``self-eval-turn``: its ``mode="turn"``, whose value the policy's
    generation reads off its own cache with ``SearchConfig.fused_eval``), ``verifier`` (kwargs: ``fallback`` = a critic name or Critic;
    ``reward_mode`` when no env is given), ``rollout`` (``inner`` = a critic name, Critic or
    None; default ``self-eval``), ``judge``, ``none`` (constant 0.5, or ``value=``), and
    ``prm`` / ``value`` (trained critics: ``path=`` a critic directory, or the name
    ``prm:PATH``; options ``device``, ``prefill_tokens``, ``share_prefix``, PRM ``aggregate``),
    and ``ensemble`` with ``spec="self-eval:0.5,verifier:0.5"`` (a name holding ``:`` or ``,``
    is read as such a spec too; ``member_kwargs={"judge": {...}}`` configures members).
    """
    if not isinstance(name, str):
        raise CriticError(f"critic name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    members = _parse_members(name) if (":" in key or "," in key) and key != "ensemble" else None
    if members is not None and len(members) == 1 and members[0][2] is None and members[0][1] is not None:
        key, kwargs = members[0][0], {**kwargs, "path": members[0][1]}  # a lone "prm:PATH"
    if key in PATH_CRITICS:
        path = kwargs.pop("path", None)
        if not path:
            raise CriticError(f"critic {key!r} needs path= (a directory written by training.critic_train), "
                              f"or the spec '{key}:PATH'")
        allowed = ["device", "prefill_tokens", "share_prefix"] + (["aggregate"] if key == "prm" else [])
        _no_extra(key, {k: v for k, v in kwargs.items() if k not in allowed}, allowed)
        return PATH_CRITICS[key](path, **kwargs)
    if key == "ensemble" or ":" in key or "," in key:
        spec = kwargs.pop("spec", None) if key == "ensemble" else name
        if spec is None:
            raise CriticError(f"critic 'ensemble' needs spec=, e.g. {_SPEC_EXAMPLE}")
        member_kwargs = kwargs.pop("member_kwargs", {}) or {}
        _no_extra("ensemble", kwargs)
        return EnsembleCritic([(make_critic(n, backend, env, **member_kwargs.get(n.partition(":")[0], {})), w)
                               for n, w in parse_ensemble_spec(spec)])
    if key == "none":
        value = kwargs.pop("value", 0.5)
        _no_extra("none", kwargs)
        return ConstantCritic(value)
    if key in ("self-eval", "self-eval-turn"):  # -turn: asked in the policy's own chat, so fusable (SelfEvalConfig.mode)
        mode = {"mode": "turn"} if key == "self-eval-turn" else {}
        return SelfEvalCritic(_need_backend(key, backend), _config(key, SelfEvalConfig, {**mode, **kwargs}))
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
    """``"self-eval:0.5,verifier:0.5"`` -> ``[("self-eval", 0.5), ("verifier", 0.5)]``; weight 1 if omitted.

    A trained critic keeps its path: ``"prm:/runs/c:0.5"`` -> ``[("prm:/runs/c", 0.5)]``.
    """
    return [(n if path is None else f"{n}:{path}", 1.0 if w is None else w) for n, path, w in _parse_members(spec)]


def _parse_members(spec: str) -> list[tuple[str, str | None, float | None]]:
    """(name, path or None, weight or None when not given) per member of ``spec``."""
    members: list[tuple[str, str | None, float | None]] = []
    for part in spec.split(","):
        part = part.strip()
        name, _, rest = part.partition(":")
        name = name.strip().lower()
        if not name:
            raise CriticError(f"ensemble spec {spec!r} has an empty member; expected e.g. {_SPEC_EXAMPLE}")
        if name not in CRITICS or name == "ensemble":
            known = [c for c in CRITICS if c != "ensemble"]
            raise CriticError(f"ensemble spec {spec!r} names unknown member {name!r}; expected one of {known}")
        path, weight = None, rest
        if name in PATH_CRITICS:
            head, sep, tail = rest.rpartition(":")
            path, weight = (head.strip(), tail) if sep and head.strip() and _is_number(tail) else (rest.strip(), "")
            if not path:
                raise CriticError(f"ensemble spec {spec!r}: {name!r} needs a path, e.g. '{name}:runs/critic'")
        try:
            w = float(weight) if weight.strip() else None
        except ValueError:
            raise CriticError(f"ensemble spec {spec!r} gives {name!r} the weight {weight.strip()!r}; expected a number") from None
        members.append((name, path, w))
    return members


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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

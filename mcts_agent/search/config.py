"""Search configuration: one dataclass for every algorithm, validated on construction."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from mcts_agent.errors import ConfigError
from mcts_agent.executor import EXECUTORS
from mcts_agent.ray_executor import check_resources


class Algo(str, enum.Enum):
    MCTS = "mcts"  # Monte Carlo tree search over reasoning steps
    BEST_OF_N = "bon"  # N full solutions, reranked by the critic
    SELF_CONSISTENCY = "sc"  # N full solutions, majority vote over answers
    BEAM = "beam"  # step-level beam search scored by the critic
    GREEDY = "greedy"  # one greedy chain of thought

    @property
    def needs_critic(self) -> bool:
        """Whether the algorithm scores nodes or solutions with a critic."""
        return self in (Algo.MCTS, Algo.BEAM, Algo.BEST_OF_N)


class Selection(str, enum.Enum):
    PUCT = "puct"  # priors from length-normalised policy logprobs
    UCT = "uct"


class AnswerRule(str, enum.Enum):
    VISITS = "visits"  # follow the most visited child from the root
    Q = "q"  # the terminal node with the best mean value
    VOTE = "vote"  # majority over terminal answers, ties by summed Q


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class SearchConfig:
    """How to search. Budgets are per tree; the ``None`` budgets are unlimited."""

    algo: Algo = _opt(Algo.MCTS, "mcts | bon | sc | beam | greedy")
    simulations: int = _opt(16, "MCTS: expansions per tree")
    branching: int = _opt(4, "candidate next steps sampled per expansion (one shared prompt pass)")
    selection: Selection = _opt(Selection.PUCT, "MCTS selection rule: puct | uct")
    c_puct: float = _opt(1.25, "exploration constant")
    virtual_loss: float = _opt(1.0, "virtual visits added along a selected path while it is in flight")
    leaves_per_tree: int = _opt(1, "MCTS: leaves selected per tree per round (virtual loss keeps them apart)")
    widening: float = _opt(0.0, "MCTS progressive widening: a node with children is sampled again while "
                                "children < widening * visits ** widening_alpha (0 = off)")
    widening_alpha: float = _opt(0.5, "MCTS progressive widening exponent, in (0, 1]")
    samples: int = _opt(8, "best-of-N / self-consistency: full solutions per task")
    beam_width: int = _opt(4, "beam search: states kept per depth")
    temperature: float = _opt(0.8, "sampling temperature (greedy ignores it)")
    top_p: float = _opt(0.95, "nucleus sampling mass")
    max_step_tokens: int = _opt(64, "token cap of one step; a step cut by it is not a finished step")
    max_solution_tokens: int = _opt(384, "token cap of a full solution (greedy, best-of-N, self-consistency)")
    token_budget: int | None = _opt(None, "generated-token budget per tree")
    time_budget: float | None = _opt(None, "wall-clock seconds per tree")
    answer_rule: AnswerRule = _opt(AnswerRule.VOTE, "how MCTS picks its final answer: visits | q | vote")
    merge_duplicates: bool = _opt(True, "merge identical sibling steps into one node")
    fused_eval: bool = _opt(True, "fused evaluation: when the critic's prompt extends the policy's (self-eval "
                                  "suffix/turn mode) and the backend supports it (transformers), score each new "
                                  "step off its generation's KV cache instead of re-reading it (same values)")
    max_trees_in_flight: int = _opt(64, "trees searched at once (their requests share each batch)")
    seed: int = _opt(0, "seed for sampling; the same seed gives the same trees")
    env_workers: int = _opt(1, "env steps run at once: a round's steps go to this many workers in one batched call")
    env_executor: str = _opt("thread", "where env steps run: serial | thread | process | ray")
    ray: str | None = _opt(None, "run env steps on Ray actors (env_workers of them) on this cluster: host:port, "
                                 "auto (RAY_ADDRESS or the one `ray start` made here, else a new local one) or "
                                 "local (a new local cluster); implies env_executor ray")
    ray_resources: str = _opt("CPU=1", "what each Ray env worker asks for, e.g. CPU=1,GPU=0,browser=1 "
                                       "(custom names as the nodes' `ray start --resources`)")
    ray_retries: int = _opt(3, "times one env step is retried after its Ray worker died (the worker is restarted)")

    # Fields that change how fast a run goes, not which trees it searches.
    RUNTIME_FIELDS: ClassVar[tuple[str, ...]] = ("max_trees_in_flight", "env_workers", "env_executor", "ray",
                                                 "ray_resources", "ray_retries", "fused_eval")

    def __post_init__(self) -> None:
        for name, enum_type in (("algo", Algo), ("selection", Selection), ("answer_rule", AnswerRule)):
            value = getattr(self, name)
            try:
                setattr(self, name, enum_type(value))
            except ValueError:
                raise ConfigError(f"SearchConfig.{name} must be one of {[e.value for e in enum_type]}, got {value!r}") from None
        for name in ("simulations", "branching", "leaves_per_tree", "samples", "beam_width",
                     "max_step_tokens", "max_solution_tokens", "max_trees_in_flight", "env_workers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"SearchConfig.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.env_executor not in EXECUTORS:
            raise ConfigError(f"SearchConfig.env_executor must be one of {list(EXECUTORS)}, got {self.env_executor!r}")
        self._check_ray()
        if not 0 < self.widening_alpha <= 1:
            raise ConfigError(f"SearchConfig.widening_alpha must be in (0, 1], got {self.widening_alpha!r}")
        for name in ("c_puct", "virtual_loss", "temperature", "widening"):
            if getattr(self, name) < 0:
                raise ConfigError(f"SearchConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"SearchConfig.top_p must be in (0, 1], got {self.top_p!r}")
        if self.token_budget is not None and self.token_budget < 1:
            raise ConfigError(f"SearchConfig.token_budget must be >= 1 or None, got {self.token_budget!r}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(f"SearchConfig.time_budget must be > 0 or None, got {self.time_budget!r}")

    def _check_ray(self) -> None:
        if self.ray is not None:
            if not isinstance(self.ray, str) or not self.ray.strip():
                raise ConfigError(f"SearchConfig.ray must be a cluster address, 'auto' or 'local', got {self.ray!r}")
            if self.env_executor == "thread":  # the default: giving a cluster is enough
                self.env_executor = "ray"
            elif self.env_executor != "ray":
                raise ConfigError(f"SearchConfig.ray={self.ray!r} runs env steps on Ray actors, but env_executor is "
                                  f"{self.env_executor!r}; leave env_executor at its default or set it to 'ray'")
        if not isinstance(self.ray_retries, int) or self.ray_retries < 0:
            raise ConfigError(f"SearchConfig.ray_retries must be an integer >= 0, got {self.ray_retries!r}")
        check_resources(self.ray_resources, "SearchConfig.ray_resources")

    def executor_options(self) -> dict[str, Any]:
        """Keyword options of ``make_executor`` for this config (the Ray settings, for ``ray``)."""
        if self.env_executor != "ray":
            return {}
        return {"address": self.ray, "resources": self.ray_resources, "retries": self.ray_retries}

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown SearchConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

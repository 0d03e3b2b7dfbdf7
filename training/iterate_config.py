"""Configuration of ``mcts-agent iterate``: one JSON (or TOML) file, validated up front."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mcts_agent.errors import ConfigError
from mcts_agent.llm.spec import BackendSpec
from mcts_agent.search import SearchConfig
from mcts_agent.training.critic_train import CriticTrainConfig
from mcts_agent.training.dpo import DPOTrainConfig
from mcts_agent.training.sft import SFTTrainConfig
from mcts_agent.training.pairs import PairConfig


TRAINED = "trained"  # the critic-spec name of iterate's self-evolving critic


def uses_trained_critic(spec: str) -> bool:
    """Does a critic spec name the 'trained' critic (alone or as an ensemble member)?"""
    return any(part.strip().partition(":")[0].strip().lower() == TRAINED for part in spec.split(","))


def _opt(default: Any, help: str) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class IterateConfig:
    """K iterations of: search (train split) -> pairs -> DPO -> evaluation (held-out split)."""

    out_dir: str = _opt("runs/iterate", "Each iteration's artifacts go to out_dir/iter_<k>/<phase>/.")
    env: str = _opt("math/arithmetic", "Environment name (envs.list_envs()).")
    train_data: str | None = _opt(None, "Train task file or datasets id (env default if None).")
    eval_data: str | None = _opt(None, "Held-out task file or datasets id (env default if None).")
    train_split: str = _opt("train", "Split of the train tasks.")
    eval_split: str = _opt("test", "Split of the held-out tasks.")
    train_tasks: int = _opt(64, "Train tasks searched per iteration.")
    eval_tasks: int = _opt(100, "Held-out tasks evaluated per iteration.")
    train_seed: int = _opt(1, "Seed choosing (or generating) the train tasks.")
    eval_seed: int = _opt(2, "Seed choosing (or generating) the held-out tasks.")
    model: str | None = _opt(None, "Initial policy: HF id or local dir; the embedded model if None.")
    backend: dict[str, Any] = _opt({"backend": "transformers"}, "BackendSpec of the policy's training searches: "
                                   "backend transformers | vllm | openai and its options (device, cache_dir, "
                                   "base_url, replicas and replica_resources: Ray actors serving it); the model is the policy of each iteration.")
    eval_backend: dict[str, Any] | None = _opt(None, "BackendSpec of the held-out evaluation; None: as backend.")
    critic_backend: dict[str, Any] | None = _opt(None, "BackendSpec, with its own model, of a fixed critic model; "
                                                 "None: critics read the policy's own backend.")
    method: str = _opt("dpo", "dpo: step-level MCTS-DPO | sft: rejection-sampling SFT on correct paths (STaR baseline) "
                              "| revision: Agent-R, SFT on revision trajectories plus correct paths.")
    max_examples: int | None = _opt(None, "Cap on training examples per iteration (pairs or SFT records); None: all.")
    iterations: int = _opt(2, "Number of search -> train -> evaluate iterations.")
    max_steps: int = _opt(4, "Step budget of an episode.")
    critic: str = _opt("self-eval:0.5,verifier:0.5", "Critic of the training search (outcome rewards allowed).")
    search: dict[str, Any] = _opt({"algo": "mcts", "simulations": 8, "branching": 4}, "SearchConfig of the training search.")
    eval_algos: list[str] = _opt(["greedy"], "Algorithms evaluated on the held-out split each iteration.")
    eval_search: dict[str, Any] = _opt({"simulations": 8, "branching": 4}, "SearchConfig fields for held-out MCTS.")
    eval_critic: str = _opt("self-eval", "Critic for held-out search (no gold: evaluation never sees it).")
    critic_train: dict[str, Any] | None = _opt(None, "CriticTrainConfig fields (kind prm | value, label, ...): each "
                                               "iteration also trains a critic on its own search trees, continuing "
                                               "the last one (the first from model); 'trained' in critic or "
                                               "eval_critic names it (self-eval until one exists). None: no critic "
                                               "training.")
    pairs: dict[str, Any] = _opt({}, "PairConfig fields.")
    dpo: dict[str, Any] = _opt({}, "DPOTrainConfig fields (output_dir is set per iteration).")
    sft: dict[str, Any] = _opt({}, "SFTTrainConfig fields for method sft (output_dir is set per iteration).")
    seed: int = _opt(0, "Seed of sampling and training.")

    def __post_init__(self) -> None:
        for name in ("train_tasks", "eval_tasks", "iterations", "max_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"IterateConfig.{name} must be an integer >= 1, got {v!r}")
        if self.method not in ("dpo", "sft", "revision"):
            raise ConfigError(f"IterateConfig.method must be 'dpo', 'sft' or 'revision', got {self.method!r}")
        if self.max_examples is not None and (not isinstance(self.max_examples, int) or self.max_examples < 1):
            raise ConfigError(f"IterateConfig.max_examples must be None or an integer >= 1, got {self.max_examples!r}")
        # Validate the nested configs now, so a typo fails before hours of search.
        for name, cls in (("pairs", PairConfig), ("dpo", DPOTrainConfig), ("sft", SFTTrainConfig)):
            self._check_nested(name, cls)
        for name in ("backend", "eval_backend", "critic_backend"):
            self.backend_spec(name)
        self.search_config()
        for algo in self.eval_algos:
            self.eval_config(algo)
        self._check_trained_critic()
        PairConfig(**self.pairs)
        DPOTrainConfig(**{**self.dpo, "output_dir": "unused"})
        SFTTrainConfig(**{**self.sft, "output_dir": "unused"})

    def critic_train_config(self, output_dir: str = "unused") -> CriticTrainConfig | None:
        """The critic_train fields as a CriticTrainConfig (None when no critic is trained)."""
        if self.critic_train is None:
            return None
        self._check_nested("critic_train", CriticTrainConfig)
        return CriticTrainConfig(**{"seed": self.seed, **self.critic_train, "output_dir": output_dir})

    def _check_trained_critic(self) -> None:
        self.critic_train_config()
        for name in ("critic", "eval_critic"):
            if uses_trained_critic(getattr(self, name)) and self.critic_train is None:
                raise ConfigError(f"IterateConfig.{name} {getattr(self, name)!r} names the 'trained' critic, but "
                                  "critic_train is None; set critic_train (e.g. {\"kind\": \"prm\"}) or name another critic")

    def _check_nested(self, name: str, cls: type) -> None:
        """Field ``name`` must be an object whose keys are fields of dataclass ``cls``."""
        value = getattr(self, name)
        if not isinstance(value, dict):
            raise ConfigError(f"IterateConfig.{name} must be an object of {cls.__name__} fields, got {value!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"IterateConfig.{name}: unknown {cls.__name__} keys {unknown}; known keys: {sorted(known)}")

    def uses_ray(self) -> bool:
        """Whether a search steps its envs on Ray or a backend is served by Ray replicas."""
        if self.search_config().env_executor == "ray" or any(
                self.eval_config(a).env_executor == "ray" for a in self.eval_algos):
            return True
        specs = [self.backend_spec(n) for n in ("backend", "eval_backend", "critic_backend")]
        return any(s is not None and s.replicas > 0 for s in specs)

    def backend_spec(self, name: str, model: str | None = None) -> BackendSpec | None:
        """The BackendSpec in field ``name`` (``eval_backend`` falls back to ``backend``) with ``model``."""
        value = getattr(self, name)
        if value is None:
            return self.backend_spec("backend", model) if name == "eval_backend" else None
        self._check_nested(name, BackendSpec)
        if name != "critic_backend" and value.get("backend") == "openai":  # a server handed LoRA adapters
            if self._trainer().get("full_finetune"):
                raise ConfigError(f"IterateConfig.{name}: backend 'openai' is handed each iteration's policy as a "
                                  f"LoRA adapter, but {'dpo' if self.method == 'dpo' else 'sft'}.full_finetune "
                                  "trains no adapter; train with LoRA, or use transformers or vllm")
            if value.get("replicas"):
                raise ConfigError(f"IterateConfig.{name}: replicas do not apply to an 'openai' policy, which is "
                                  "handed adapters on one server; scale the server instead")
        if name != "critic_backend" and "model" in value:
            raise ConfigError(f"IterateConfig.{name} names a model; the policy's model is IterateConfig.model "
                              "(then each iteration's trained policy)")
        try:
            spec = BackendSpec(**value)
        except ConfigError as e:
            raise ConfigError(f"IterateConfig.{name}: {e}") from None
        if name != "critic_backend" and spec.backend != "openai":  # a server is handed adapters instead
            spec.model = model
        return spec

    def _trainer(self) -> dict[str, Any]:
        """The fields of the policy's trainer: dpo, or sft for the sft and revision methods."""
        return self.dpo if self.method == "dpo" else self.sft

    def serves_adapters(self) -> bool:
        """Whether a policy phase runs on an OpenAI-compatible server, which is handed LoRA adapters."""
        return any(s is not None and s.backend == "openai"
                   for s in (self.backend_spec("backend"), self.backend_spec("eval_backend")))

    def resolve_critic(self, spec: str, trained: str | None) -> str:
        """``spec`` with its 'trained' members replaced by ``KIND:trained`` (the critic directory),
        or by self-eval while no critic has been trained yet."""
        kind = (self.critic_train or {}).get("kind", "prm")
        members = []
        for part in spec.split(","):
            name, sep, weight = part.strip().partition(":")
            if name.strip().lower() == TRAINED:
                name = f"{kind}:{trained}" if trained else "self-eval"
            members.append(name + sep + weight)
        return ",".join(members)

    def search_config(self) -> SearchConfig:
        return SearchConfig.from_dict({"seed": self.seed, **self.search})

    def eval_config(self, algo: str) -> SearchConfig:
        return SearchConfig.from_dict({"seed": self.seed, **self.eval_search, "algo": algo})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> "IterateConfig":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; expected a .json or .toml IterateConfig")
        try:
            data = tomllib.loads(p.read_text()) if p.suffix == ".toml" else json.loads(p.read_text())
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"config file {p} is not valid {p.suffix[1:] or 'JSON'}: {e}") from e
        data.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{p}: unknown IterateConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

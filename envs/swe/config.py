"""What ``mcts-agent swe generate`` builds: one dataclass, the CLI's options derived from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from mcts_agent.errors import ConfigError

PROJECT_NAMES = ("cachetools", "toolz")  # envs.swe.projects.PROJECTS (checked there too)
KINDS = ("flip_compare", "flip_arith", "swap_operands", "change_constant", "flip_bool", "invert_if", "remove_if",
         "remove_assign", "remove_loop")


@dataclass
class GenerateConfig:
    """What ``swe generate`` builds."""

    project: str = field(default="cachetools", metadata={"help": "project to inject bugs into: cachetools | toolz"})
    out: str = field(default="swe_instances.jsonl", metadata={"help": "instance file to write (JSONL, SWE-bench format)"})
    repos_dir: str = field(default="swe_repos", metadata={"help": "folder for the project's git checkout"})
    max_instances: int = field(default=10, metadata={"help": "stop after this many instances"})
    max_candidates: int = field(default=40, metadata={"help": "try at most this many mutation sites"})
    seed: int = field(default=0, metadata={"help": "order in which sites are tried"})
    kinds: str = field(default=",".join(KINDS), metadata={"help": "mutation kinds, comma-separated"})
    timeout_s: float = field(default=60.0, metadata={"help": "wall-clock limit of one test-suite run, seconds"})

    def __post_init__(self) -> None:
        if self.project not in PROJECT_NAMES:
            raise ConfigError(f"GenerateConfig.project must be one of {list(PROJECT_NAMES)}, got {self.project!r}")
        for name in ("max_instances", "max_candidates"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"GenerateConfig.{name} must be an int >= 1, got {v!r}")
        bad = [k for k in self.kind_list if k not in KINDS]
        if bad or not self.kind_list:
            raise ConfigError(f"GenerateConfig.kinds: unknown kind(s) {bad}; kinds: {list(KINDS)}")
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise ConfigError(f"GenerateConfig.timeout_s must be > 0, got {self.timeout_s!r}")

    @property
    def kind_list(self) -> list[str]:
        return [k.strip() for k in self.kinds.split(",") if k.strip()]

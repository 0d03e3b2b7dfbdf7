"""A Markdown table of a config dataclass's fields (name, default, help), for the docs."""

from __future__ import annotations

import json
from dataclasses import MISSING, fields


def config_table(cls: type) -> str:
    """``| field | default | meaning |`` rows for every field of dataclass ``cls``."""
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for f in fields(cls):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        meaning = f.metadata.get("help", "").replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{json.dumps(default)}` | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    from mcts_agent.training.iterate_config import IterateConfig

    print(config_table(IterateConfig))

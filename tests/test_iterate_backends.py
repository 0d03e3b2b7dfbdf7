"""``iterate`` on any backend: the config names the backend of each phase; vLLM serves each iteration's policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcts_agent.errors import ConfigError
from mcts_agent.training.iterate_config import IterateConfig


def test_backend_fields_are_validated_up_front() -> None:
    cfg = IterateConfig(backend={"backend": "vllm", "options": {"max_model_len": 512}})
    spec = cfg.backend_spec("eval_backend", "runs/x/merged")
    assert (spec.backend, spec.model, spec.options) == ("vllm", "runs/x/merged", {"max_model_len": 512})
    assert cfg.backend_spec("critic_backend") is None
    with pytest.raises(ConfigError, match=r"IterateConfig.backend: unknown backend 'vlm'"):
        IterateConfig(backend={"backend": "vlm"})
    with pytest.raises(ConfigError, match=r"IterateConfig.eval_backend: unknown BackendSpec keys \['devise'\]"):
        IterateConfig(eval_backend={"backend": "transformers", "devise": "cpu"})
    with pytest.raises(ConfigError, match="names a model; the policy's model is IterateConfig.model"):
        IterateConfig(backend={"backend": "transformers", "model": "x"})
    with pytest.raises(ConfigError, match="backend 'openai' cannot serve each iteration's new policy"):
        IterateConfig(backend={"backend": "openai", "base_url": "http://127.0.0.1:1/v1"})
    critic = IterateConfig(critic_backend={"backend": "openai", "model": "judge", "base_url": "http://127.0.0.1:1/v1"})
    assert critic.backend_spec("critic_backend").model == "judge"
    served = IterateConfig(eval_backend={"backend": "vllm", "replicas": 2, "replica_resources": "GPU=1"})
    spec = served.backend_spec("eval_backend")
    assert (spec.replicas, spec.replica_resources) == (2, "GPU=1") and served.uses_ray() and not cfg.uses_ray()
    with pytest.raises(ConfigError, match=r"IterateConfig.backend: --replicas must be an integer >= 0, got -1"):
        IterateConfig(backend={"backend": "transformers", "replicas": -1})
    with pytest.raises(ConfigError, match=r"IterateConfig.backend: --replica-resources: Ray resources 'GPU'"):
        IterateConfig(backend={"backend": "transformers", "replicas": 1, "replica_resources": "GPU"})


@pytest.mark.vllm
@pytest.mark.model
def test_iterate_on_vllm_serves_the_trained_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcts_agent.llm import vllm_backend
    from mcts_agent.errors import BackendError
    from mcts_agent.io import load_trees
    from mcts_agent.training.iterate import run_iterate

    try:
        vllm_backend.import_vllm()
    except BackendError as e:
        pytest.skip(str(e))
    loaded: list[str] = []
    original = vllm_backend.VLLMBackend.__init__

    def spy(self, model=None, **kwargs):  # type: ignore[no-untyped-def]
        loaded.append(str(model))
        original(self, model, **kwargs)

    monkeypatch.setattr(vllm_backend.VLLMBackend, "__init__", spy)
    from tests.test_iterate import TINY

    # step-level evaluation (MCTS): each step's logprob comes from the served weights
    cfg = IterateConfig(**{**TINY, "out_dir": str(tmp_path / "run"), "eval_tasks": 2, "eval_algos": ["mcts"],
                           "eval_search": {"simulations": 2, "branching": 2, "max_step_tokens": 24},
                           "backend": {"backend": "vllm", "options": {"max_model_len": 1024}}})
    result = run_iterate(cfg)
    root = tmp_path / "run"
    merged = str(root / "iter_1" / "train" / "merged")
    assert result["history"][1]["train"]["steps"] == TINY["dpo"]["max_steps"], result["history"][1]
    assert loaded[-1] == merged and len(loaded) == 3  # eval 0, search 1 (the initial model), eval 1 (the trained one)

    def logprobs(k: int) -> dict[str, list[float]]:
        trees = load_trees(root / f"iter_{k}" / "eval" / "mcts" / "trees.jsonl")
        return {t.task_id: [round(n.logprob, 6) for n in t.nodes[1:]] for t in trees}

    before, after = logprobs(0), logprobs(1)
    assert any(x != 0.0 for v in before.values() for x in v) and before != after  # iteration 1 was evaluated with the new weights
    assert json.loads((root / "iter_1" / "eval" / "DONE.json").read_text())["mcts"]["tasks"] == 2


def test_docs_list_every_iterate_field_as_the_config_defines_it() -> None:
    from mcts_agent.training.config_table import config_table

    doc = (Path(__file__).parent.parent / "docs" / "iterate.md").read_text()
    assert config_table(IterateConfig) in doc, "regenerate the table: python -m mcts_agent.training.config_table"

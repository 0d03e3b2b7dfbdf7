"""``iterate`` on any backend: the config names the backend of each phase; vLLM serves each iteration's policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

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
    served = IterateConfig(backend={"backend": "openai", "base_url": "http://127.0.0.1:1/v1"}, model="m")
    assert served.serves_adapters() and served.backend_spec("backend", "m").model is None  # adapters, not paths
    assert not cfg.serves_adapters()
    with pytest.raises(ConfigError, match="backend 'openai' is handed each iteration's policy as a LoRA adapter, "
                                          "but dpo.full_finetune trains no adapter"):
        IterateConfig(backend={"backend": "openai", "base_url": "http://127.0.0.1:1/v1"}, dpo={"full_finetune": True})
    critic = IterateConfig(critic_backend={"backend": "openai", "model": "judge", "base_url": "http://127.0.0.1:1/v1"})
    assert critic.backend_spec("critic_backend").model == "judge"
    served = IterateConfig(eval_backend={"backend": "vllm", "replicas": 2, "replica_resources": "GPU=1"})
    spec = served.backend_spec("eval_backend")
    assert (spec.replicas, spec.replica_resources) == (2, "GPU=1") and served.uses_ray() and not cfg.uses_ray()
    with pytest.raises(ConfigError, match=r"IterateConfig.backend: replicas do not apply to an 'openai' policy"):
        IterateConfig(backend={"backend": "openai", "replicas": 2})
    with pytest.raises(ConfigError, match=r"IterateConfig.backend: --replicas must be an integer >= 0, got -1"):
        IterateConfig(backend={"backend": "transformers", "replicas": -1})
    with pytest.raises(ConfigError, match=r"IterateConfig.backend: --replica-resources: Ray resources 'GPU'"):
        IterateConfig(backend={"backend": "transformers", "replicas": 1, "replica_resources": "GPU"})


@pytest.mark.vllm
@pytest.mark.model
@pytest.mark.timeout(1800)  # two iterations, then a killed and resumed second one: eight vLLM engine starts
def test_iterate_on_vllm_serves_each_new_policy_and_resumes_after_kill_9(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import psutil

    from mcts_agent.errors import BackendError
    from mcts_agent.io import load_trees
    from mcts_agent.llm import vllm_backend
    from mcts_agent.training.iterate import run_iterate
    from tests.test_iterate import TINY, _run, _strip

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
    # step-level evaluation (MCTS): each step's logprob comes from the served weights
    root = tmp_path / "run"
    cfg = IterateConfig(**{**TINY, "out_dir": str(root), "iterations": 2, "eval_tasks": 2, "eval_algos": ["mcts"],
                           "eval_search": {"simulations": 2, "branching": 2, "max_step_tokens": 24},
                           "backend": {"backend": "vllm", "options": {"max_model_len": 1024}}})
    def children() -> dict[int, str]:
        return {c.pid: " ".join(c.cmdline()) for c in psutil.Process().children(recursive=True)
                if c.is_running() and c.status() != psutil.STATUS_ZOMBIE}

    before = children()  # what earlier tests of the session started (servers, clusters)
    result = run_iterate(cfg)
    merged = str(root / "iter_1" / "train" / "merged")
    assert result["history"][1]["train"]["steps"] == TINY["dpo"]["max_steps"], result["history"][1]
    # eval 0 and search 1 on the initial model; eval 1 and search 2 on iteration 1's policy; eval 2 on the latest
    assert loaded[:4] == [loaded[0], loaded[0], merged, merged] and len(loaded) == 5, loaded
    # every phase's engine core and workers are gone (multiprocessing's own resource tracker and
    # fork server, started on first use, live on by design)
    left = {pid: cmd for pid, cmd in children().items() if pid not in before and "from multiprocessing." not in cmd}
    assert not left, left

    def logprobs(run: Path, k: int, phase: str) -> dict[str, list[float]]:
        trees = load_trees(run / f"iter_{k}" / phase / "trees.jsonl")
        return {t.task_id: [round(n.logprob, 6) for n in t.nodes[1:]] for t in trees}

    first, second = logprobs(root, 1, "search"), logprobs(root, 2, "search")
    assert any(x != 0.0 for v in first.values() for x in v)
    assert first != second  # the same tasks and seeds: the second search ran on the new weights
    assert logprobs(root, 0, "eval/mcts") != logprobs(root, 1, "eval/mcts")

    # kill -9 inside iteration 2's search (one of three trees written; the engine's worker
    # processes die with the run's process group), then resume: the same result as above.
    again = tmp_path / "again"
    for k in (0, 1):  # the same config's finished phases
        shutil.copytree(root / f"iter_{k}", again / f"iter_{k}")
    (tmp_path / "again.json").write_text(json.dumps({**cfg.to_dict(), "out_dir": str(again)}))
    inside = again / "iter_2" / "search" / "results.jsonl"
    group = _run(tmp_path / "again.json", inside=inside)
    assert isinstance(group, int) and not (inside.parent / "DONE.json").exists(), "killed after the search was done"
    _gone(group)
    resumed = _run(tmp_path / "again.json")
    assert not isinstance(resumed, int) and resumed.returncode == 0, resumed
    assert _strip(json.loads((again / "result.json").read_text())) == _strip(result)  # merged_dir and seconds aside
    for phase in ("search", "eval/mcts"):
        assert logprobs(again, 2, phase) == logprobs(root, 2, phase)


def _gone(group: int, within: float = 30.0) -> None:
    """Wait until no process of process group ``group`` is left (vLLM's engine core and workers)."""
    import os
    import time

    deadline = time.monotonic() + within
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"processes of the killed run's group {group} are still alive"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``vllm serve`` of the embedded model that takes LoRA adapters at run time, as
    docs/iterate.md starts it (rank 32: two stacked rank-16 iterations); its OpenAI base URL.
    Stopped when this module's tests end."""
    from tests.conftest import serve_embedded

    lora = ("--enable-lora", "--max-lora-rank", "32", "--max-loras", "2", "--max-model-len", "1024")
    yield from serve_embedded(tmp_path_factory, "vllm_lora_serve", lora, env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"})


@pytest.mark.vllm
@pytest.mark.model
def test_iterate_hands_a_vllm_server_each_policy_as_a_lora_adapter(tmp_path: Path, lora_server: str) -> None:
    """Two iterations against one running ``vllm serve``: each phase's policy is handed to the
    server as one LoRA adapter on the base model (iteration 2's stacks both iterations' adapters),
    it generates what the merged policy would, and no adapter is left loaded."""
    from mcts_agent.io import load_trees
    from mcts_agent.llm.openai_backend import OpenAIBackend
    from mcts_agent.llm.types import GenerationRequest
    from mcts_agent.training.iterate import run_iterate
    from mcts_agent.training.lora_stack import adapter_rank
    from tests.test_iterate import TINY

    root = tmp_path / "run"
    cfg = IterateConfig(**{**TINY, "out_dir": str(root), "iterations": 2, "eval_tasks": 2, "eval_algos": ["mcts"],
                           "eval_search": {"simulations": 2, "branching": 2, "max_step_tokens": 24},
                           "backend": {"backend": "openai", "base_url": lora_server,
                                       "options": {"timeout": 300, "max_retries": 1}}})
    result = run_iterate(cfg)
    trained = [k for k in (1, 2) if not result["history"][k]["train"].get("skipped")]
    assert trained and trained[0] == 1, result["history"]
    last = trained[-1]
    assert adapter_rank(root / f"iter_{last}" / "train" / "served_adapter") == 16 * len(trained)

    def logprobs(k: int) -> dict[str, list[float]]:
        trees = load_trees(root / f"iter_{k}" / "eval" / "mcts" / "trees.jsonl")
        return {t.task_id: [round(n.logprob, 6) for n in t.nodes[1:]] for t in trees}

    assert any(x != 0.0 for v in logprobs(0).values() for x in v) and logprobs(0) != logprobs(1)
    server = OpenAIBackend(base_url=lora_server, timeout=300, max_retries=1)
    try:
        assert [m["id"] for m in server.served_models() if m.get("parent")] == []  # every adapter was unloaded
        # The served adapter is the merged policy: the server's greedy text scores the same under it.
        server.load_adapter("check", str(root / f"iter_{last}" / "train" / "served_adapter"))
        prompt = "Calculate 17 + 25.\nStep 1:"
        [[c]] = server.generate([GenerationRequest(prompt, max_tokens=12, temperature=0.0)])
        server.unload_adapter("check")
    finally:
        server.close()
    expected, base = (_logprob(m, prompt, c.token_ids) for m in (root / f"iter_{last}" / "train" / "merged", None))
    assert abs(c.cumulative_logprob - expected) <= 1e-3, (c.cumulative_logprob, expected)
    assert abs(c.cumulative_logprob - base) > 1e-3, (c.cumulative_logprob, base)  # the check can tell them apart


def _logprob(model: Path | None, prompt: str, token_ids: list[int]) -> float:
    """The sum of log-probabilities of ``token_ids`` after ``prompt`` under a model (None: the
    embedded base model), read off one forward pass."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mcts_agent.llm.model_store import resolve_model

    path = str(model) if model else resolve_model(None)
    tok, lm = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        logp = torch.log_softmax(lm(torch.cat([ids, torch.tensor([token_ids])], 1)).logits[0, :-1], -1)
    n = ids.shape[1]
    return float(sum(logp[n - 1 + i, t] for i, t in enumerate(token_ids)))


def test_docs_list_every_iterate_field_as_the_config_defines_it() -> None:
    from mcts_agent.training.config_table import config_table

    doc = (Path(__file__).parent.parent / "docs" / "iterate.md").read_text()
    assert config_table(IterateConfig) in doc, "regenerate the table: python -m mcts_agent.training.config_table"

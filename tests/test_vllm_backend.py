"""VLLMBackend on the real offline engine with the embedded model (slow: one load per module)."""

from __future__ import annotations

import math
from typing import Iterator

import pytest

from mcts_agent.errors import BackendError, ConfigError, PromptTooLongError
from mcts_agent.llm.types import FinishReason, GenerationRequest

pytestmark = [pytest.mark.vllm, pytest.mark.model]

MAX_MODEL_LEN = 1024


@pytest.fixture(scope="module")
def backend() -> Iterator["VLLMBackend"]:  # noqa: F821
    from mcts_agent.llm.vllm_backend import VLLMBackend, import_vllm

    try:
        import_vllm()
    except BackendError as e:
        pytest.skip(str(e))
    b = VLLMBackend(max_model_len=MAX_MODEL_LEN)
    print(f"\nvLLM engine loaded in {b.load_seconds:.1f}s")
    yield b
    b.close()
    b.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        b.generate([GenerationRequest("x", max_tokens=1)])


def chat(backend, text: str) -> str:  # type: ignore[no-untyped-def]
    return backend.format_chat([{"role": "user", "content": text}])


def test_format_chat_and_count_tokens(backend) -> None:  # type: ignore[no-untyped-def]
    prompt = chat(backend, "What is 2+3?")
    assert "What is 2+3?" in prompt and prompt.rstrip().endswith("assistant")
    assert backend.count_tokens("hello world") == 2


def test_batch_order_and_n(backend) -> None:  # type: ignore[no-untyped-def]
    prompts = ["The capital of France is", "1, 2, 3, 4,", "def add(a, b):"]
    alone = [backend.generate([GenerationRequest(p, max_tokens=8, temperature=0.0)])[0][0].text for p in prompts]
    reqs = [GenerationRequest(p, n=i + 1, max_tokens=8, temperature=0.0) for i, p in enumerate(prompts)]
    calls = backend.stats.calls
    out = backend.generate(reqs)
    assert backend.stats.calls == calls + 1  # one engine call for the whole batch
    assert [len(cs) for cs in out] == [1, 2, 3]
    assert [[c.text for c in cs] for cs in out] == [[t] * (i + 1) for i, t in enumerate(alone)]


def test_stop_string_and_length(backend) -> None:  # type: ignore[no-untyped-def]
    [[stopped], [cut]] = backend.generate([
        GenerationRequest(chat(backend, "Tell me about the sea."), max_tokens=64, temperature=0.0, stop=("e",)),
        GenerationRequest("Once upon a time", max_tokens=3, temperature=0.0),
    ])
    assert stopped.finish_reason is FinishReason.STOP and stopped.stop_reason == "e" and "e" not in stopped.text
    # ids/logprobs cover the kept text only (the token carrying the stop string is dropped)
    assert stopped.text.startswith(backend.tokenizer.decode(stopped.token_ids))
    assert len(stopped.logprobs) == len(stopped.token_ids)
    assert cut.finish_reason is FinishReason.LENGTH and len(cut.token_ids) == 3 and cut.stop_reason is None


def test_logprobs_per_token(backend) -> None:  # type: ignore[no-untyped-def]
    [[a, b]] = backend.generate([GenerationRequest(chat(backend, "Say hi."), n=2, max_tokens=12, temperature=1.0, seed=3)])
    for c in (a, b):
        assert c.token_ids and len(c.logprobs) == len(c.token_ids)
        assert all(math.isfinite(x) and x <= 0.0 for x in c.logprobs)
        assert c.cumulative_logprob == pytest.approx(sum(c.logprobs))


def test_seed_determinism(backend) -> None:  # type: ignore[no-untyped-def]
    req = GenerationRequest(chat(backend, "Write a short poem."), n=3, max_tokens=16, temperature=1.0, seed=123)
    first = [c.token_ids for c in backend.generate([req])[0]]
    second = [c.token_ids for c in backend.generate([req])[0]]
    other = [c.token_ids for c in backend.generate([GenerationRequest(req.prompt, n=3, max_tokens=16, temperature=1.0,
                                                                      seed=124)])[0]]
    assert first == second
    assert len({tuple(t) for t in first}) > 1  # the n samples differ
    assert other != first


def test_score_agrees_with_generate_logprobs(backend) -> None:  # type: ignore[no-untyped-def]
    prompt = "The capital of France is"
    [[c]] = backend.generate([GenerationRequest(prompt, max_tokens=8, temperature=0.0)])
    assert c.finish_reason is FinishReason.LENGTH
    assert backend.tokenizer.encode(c.text, add_special_tokens=False) == c.token_ids  # same tokens both ways
    s, s_bad, s_empty = backend.score([prompt] * 3, [c.text, " a purple elephant banana", ""])
    assert s == pytest.approx(c.cumulative_logprob, rel=1e-3, abs=1e-3)
    assert s_bad < s < 0 and s_empty == 0.0
    with pytest.raises(ConfigError, match="one continuation per prompt"):
        backend.score([prompt], [])


def test_next_token_logprobs_read_candidates_off_one_cached_request(backend) -> None:  # type: ignore[no-untyped-def]
    shared = chat(backend, "Is 2 + 2 = 4? Think about the planets of the solar system first. " * 6)
    prompts = [shared + "Answer:", shared + "Reply with Yes or No:", "Paris is in France. True? Answer:"]
    calls = backend.stats.score_calls
    rows = backend.next_token_logprobs(prompts, [" Yes", " No"])
    assert backend.stats.score_calls == calls + 1  # one engine call for every prompt and candidate
    pairs = backend.score([p for p in prompts for _ in range(2)], [" Yes", " No"] * 3)
    assert [v for row in rows for v in row] == pytest.approx(pairs, abs=2e-3)  # the same log-probabilities
    assert all(v < 0 for row in rows for v in row)
    before = backend.stats.extra.get("scored_cached_prompt_tokens", 0)
    assert backend.next_token_logprobs(prompts[:2], [" Yes", " No"]) == [pytest.approx(r, abs=2e-3) for r in rows[:2]]
    assert backend.stats.extra["scored_cached_prompt_tokens"] - before >= 2 * 64  # read from the prefix cache
    assert backend.next_token_logprobs(prompts[:1], [" Yes please", " No"]) == \
        [pytest.approx(backend.score(prompts[:1] * 2, [" Yes please", " No"]), abs=1e-6)]  # several tokens: score


def test_prompt_too_long_is_caught_before_sending(backend) -> None:  # type: ignore[no-untyped-def]
    calls = backend.stats.calls
    with pytest.raises(PromptTooLongError, match=f"context of {MAX_MODEL_LEN} tokens"):
        backend.generate([GenerationRequest("ok", max_tokens=4), GenerationRequest("word " * 1100, max_tokens=4)])
    with pytest.raises(PromptTooLongError, match="request 0"):
        backend.generate([GenerationRequest("hi", max_tokens=MAX_MODEL_LEN)])
    assert backend.stats.calls == calls


def test_prefix_cache_reuses_shared_prompt(backend) -> None:  # type: ignore[no-untyped-def]
    shared = "Here is a long shared context about the planets of the solar system. " * 12
    backend.generate([GenerationRequest(shared + "Mars is", max_tokens=2, temperature=0.0)])
    before = backend.stats.extra.get("cached_prompt_tokens", 0.0)
    backend.generate([GenerationRequest(shared + "Venus is", max_tokens=2, temperature=0.0)])
    assert backend.stats.extra["cached_prompt_tokens"] - before >= 64


def test_greedy_matches_transformers(backend) -> None:  # type: ignore[no-untyped-def]
    """fp32 both. Kernels differ, so a late divergence on a near-tie is allowed; the start must agree."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    prompts = [chat(backend, "What is the capital of France?"), "Once upon a time, in a small village by the sea,"]
    out = backend.generate([GenerationRequest(p, max_tokens=24, temperature=0.0) for p in prompts])
    model = AutoModelForCausalLM.from_pretrained(backend.model_path, dtype=torch.float32).eval()
    eos = backend.tokenizer.eos_token_id
    for prompt, [c] in zip(prompts, out):
        ids = backend.tokenizer.encode(prompt)
        with torch.inference_mode():
            gen = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=24, do_sample=False)
        hf = gen[0, len(ids):].tolist()
        if eos in hf:  # the backend drops EOS from token_ids
            assert c.finish_reason is FinishReason.STOP and eos not in c.token_ids
            hf = hf[: hf.index(eos)]
        agree = next((i for i, (a, b) in enumerate(zip(c.token_ids, hf)) if a != b), min(len(hf), len(c.token_ids)))
        print(f"\nvLLM greedy: {c.token_ids}\nHF   greedy: {hf}\nagree on the first {agree} tokens")
        assert c.token_ids == hf or agree >= 8


def test_seeded_samples_beyond_one_prefill_budget(backend) -> None:  # type: ignore[no-untyped-def]
    """A batch of seeded sampled requests longer than one scheduler step's token budget: with
    chunked prefill, vLLM's CPU build kills its engine ("CPU Generator does not use offset");
    the backend turns chunked prefill off there, and seeds still reproduce the samples."""
    prompts = [f"Note {i}: " + "word " * 900 for i in range(6)]  # ~5,400 prompt tokens in all
    reqs = [GenerationRequest(p, n=2, max_tokens=4, temperature=0.9, seed=i) for i, p in enumerate(prompts)]
    out = backend.generate(reqs)
    assert [len(cs) for cs in out] == [2] * 6 and all(c.token_ids for cs in out for c in cs)
    assert [[c.text for c in cs] for cs in backend.generate(reqs[:2])] == [[c.text for c in cs] for cs in out[:2]]

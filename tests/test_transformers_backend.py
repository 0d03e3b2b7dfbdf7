"""The transformers backend on the real embedded model (small prompts, few tokens)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest

from mcts_agent.errors import ConfigError, ModelLoadError, PromptTooLongError
from mcts_agent.llm.types import FinishReason, GenerationRequest

pytestmark = pytest.mark.model

QUESTIONS = [
    "What is 12 + 7?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Name a color.",
]


@pytest.fixture(scope="module")
def prompts(embedded_backend) -> list[str]:  # type: ignore[no-untyped-def]
    return [embedded_backend.format_chat([{"role": "user", "content": q}]) for q in QUESTIONS]


@pytest.fixture(scope="module")
def greedy(embedded_backend, prompts):  # type: ignore[no-untyped-def]
    """Greedy 8-token completions of every prompt, each generated alone."""
    return [embedded_backend.generate([GenerationRequest(p, max_tokens=8, temperature=0)])[0][0] for p in prompts]


@contextmanager
def forward_shapes(backend) -> Iterator[list[tuple[int, int]]]:  # type: ignore[no-untyped-def]
    """Record ``(rows, width)`` of the input ids of every model forward pass inside the block."""
    shapes: list[tuple[int, int]] = []
    hook = backend.model.register_forward_pre_hook(
        lambda mod, args, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        yield shapes
    finally:
        hook.remove()


def _greedy(p: str, **kw: object) -> GenerationRequest:
    return GenerationRequest(p, max_tokens=8, temperature=0.0, **kw)  # type: ignore[arg-type]


def test_batched_greedy_matches_one_at_a_time_in_order(embedded_backend, prompts, greedy) -> None:  # type: ignore[no-untyped-def]
    lengths = [embedded_backend.count_tokens(p) for p in prompts]
    assert len(set(lengths)) == len(lengths)  # mixed lengths: left padding is exercised
    batched = embedded_backend.generate([_greedy(p) for p in reversed(prompts)])
    for alone, [together] in zip(greedy, reversed(batched)):
        assert together.text == alone.text and together.token_ids == alone.token_ids
        assert together.logprobs == pytest.approx(alone.logprobs, abs=1e-3)


def test_length_cut(greedy) -> None:  # type: ignore[no-untyped-def]
    for c in greedy:
        assert c.finish_reason is FinishReason.LENGTH and c.stop_reason is None
        assert len(c.token_ids) == len(c.logprobs) == 8
        assert all(lp <= 0 for lp in c.logprobs)


def test_logprobs_agree_with_score(embedded_backend, prompts, greedy) -> None:  # type: ignore[no-untyped-def]
    for c in greedy:
        assert embedded_backend.tokenizer.encode(c.text, add_special_tokens=False) == c.token_ids
    scores = embedded_backend.score(prompts, [c.text for c in greedy])
    assert scores == pytest.approx([c.cumulative_logprob for c in greedy], abs=1e-2)
    assert embedded_backend.score(prompts[:1], [""]) == [0.0]


def test_n_samples_share_one_prefill(embedded_backend, prompts, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(embedded_backend, "prefix_cache", None)  # these prompts ran before: prefill them whole
    with forward_shapes(embedded_backend) as shapes:
        out = embedded_backend.generate(
            [GenerationRequest(p, n=3, max_tokens=4, temperature=1.0, seed=i) for i, p in enumerate(prompts[:2])]
        )
    prefill_rows = [rows for rows, width in shapes if width > 1]
    assert [len(o) for o in out] == [3, 3]
    assert prefill_rows == [1, 2]  # the shared chat header once, then two prompt rows; six samples decoded


def test_stop_strings(embedded_backend, prompts, greedy) -> None:  # type: ignore[no-untyped-def]
    text = greedy[0].text
    stop = text.split()[2]  # a word the greedy continuation is known to write
    cut = text.index(stop)
    [[c]] = embedded_backend.generate([_greedy(prompts[0], stop=("never-appears", stop))])
    assert c.finish_reason is FinishReason.STOP and c.stop_reason == stop
    assert c.text == text[:cut]
    assert text.startswith(embedded_backend.tokenizer.decode(c.token_ids))
    assert len(c.logprobs) == len(c.token_ids) < 8


def test_same_seed_same_samples(embedded_backend, prompts) -> None:  # type: ignore[no-untyped-def]
    def sample(seed: int) -> list[list[int]]:
        req = GenerationRequest(prompts[2], n=2, max_tokens=8, temperature=1.0, top_p=0.95, seed=seed)
        return [c.token_ids for c in embedded_backend.generate([req])[0]]

    a, b, c = sample(7), sample(7), sample(8)
    assert a == b
    assert a != c
    assert a[0] != a[1]  # the n samples of one request differ


def test_chunking_keeps_greedy_results(embedded_backend, prompts, greedy, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(embedded_backend, "max_batch_size", 2)
    reqs = [GenerationRequest(p, n=2, max_tokens=8, temperature=0) for p in prompts]  # 6 rows > 2
    steps = embedded_backend.stats.extra.get("prefill_rows", 0)
    out = embedded_backend.generate(reqs)
    assert embedded_backend.stats.extra["prefill_rows"] - steps == 3  # one prefill per request piece
    for alone, pair in zip(greedy, out):
        assert [c.text for c in pair] == [alone.text, alone.text]


def test_prompt_too_long(embedded_backend) -> None:  # type: ignore[no-untyped-def]
    limit = embedded_backend.max_context
    long_prompt = tuple([42] * (limit - 4))
    with pytest.raises(PromptTooLongError, match=rf"request 1: prompt has {limit - 4} tokens.*{limit}"):
        embedded_backend.generate([_greedy("hi"), GenerationRequest(long_prompt, max_tokens=8)])
    with pytest.raises(PromptTooLongError, match="pair 0"):
        embedded_backend.score([long_prompt], ["x " * 10])  # type: ignore[list-item]


def test_chat_template_and_token_counts(embedded_backend) -> None:  # type: ignore[no-untyped-def]
    text = embedded_backend.format_chat([{"role": "user", "content": "hi"}])
    assert "<|im_start|>user\nhi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")
    assert embedded_backend.count_tokens("hello world") == 2
    with pytest.raises(ConfigError, match="message 0"):
        embedded_backend.format_chat([{"role": "user"}])
    with pytest.raises(ConfigError, match="request 0"):
        embedded_backend.generate([GenerationRequest((10**9,), max_tokens=1)])


def test_stats_are_counted(embedded_backend, prompts) -> None:  # type: ignore[no-untyped-def]
    before = (embedded_backend.stats.calls, embedded_backend.stats.generated_tokens)
    embedded_backend.generate([GenerationRequest(prompts[0], n=2, max_tokens=3, temperature=0)])
    assert embedded_backend.stats.calls == before[0] + 1
    assert embedded_backend.stats.generated_tokens - before[1] == 6


def test_bad_model_path_raises() -> None:
    from mcts_agent.llm.transformers_backend import TransformersBackend

    with pytest.raises(ModelLoadError, match="/no/such/model"):
        TransformersBackend("/no/such/model")
    with pytest.raises(ConfigError, match="dtype"):
        TransformersBackend(dtype="int3")


def test_matches_stock_hf_generate(embedded_backend, prompts, greedy) -> None:  # type: ignore[no-untyped-def]
    """Our loop (KV buffer, folded-GQA attention) reproduces transformers' own greedy decoding."""
    import torch

    model, tok = embedded_backend.model, embedded_backend.tokenizer
    current = model.config._attn_implementation
    enc = [tok.encode(p) for p in prompts[:2]]
    width = max(map(len, enc))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in enc])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in enc])
    model.set_attn_implementation("sdpa")
    try:
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id
            )
    finally:
        model.set_attn_implementation(current)
    assert [row[width:].tolist() for row in out] == [c.token_ids for c in greedy[:2]]


def test_stock_cache_fallback_agrees(embedded_backend, prompts, greedy, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Models with sliding-window layers use the stock DynamicCache, expanded with reorder_cache."""
    monkeypatch.setattr(embedded_backend, "use_buffer", False)
    out = embedded_backend.generate([GenerationRequest(p, n=2, max_tokens=8, temperature=0) for p in prompts[:2]])
    assert [[c.token_ids for c in o] for o in out] == [[g.token_ids] * 2 for g in greedy[:2]]


def test_greedy_samples_decoded_once(embedded_backend, prompts, greedy) -> None:  # type: ignore[no-untyped-def]
    with forward_shapes(embedded_backend) as shapes:
        [out] = embedded_backend.generate([GenerationRequest(prompts[0], n=3, max_tokens=8, temperature=0)])
    rows = [r for r, width in shapes if width == 1]
    assert [c.token_ids for c in out] == [greedy[0].token_ids] * 3
    assert out[0] is not out[1] and out[0].token_ids is not out[1].token_ids  # independent copies
    assert rows and max(rows) == 1  # one decoded row, not three


def test_shared_prefix_prefill_matches_whole_prompts(embedded_backend, prompts, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Prompts sharing a long header: the header runs once, results equal running each prompt whole."""
    from mcts_agent.llm import hf_prefix

    header = "You solve arithmetic step by step. Example: 2 + 2 = 4. Example: 3 * 3 = 9. " * 3
    shared = [header + p for p in prompts]
    ids = [embedded_backend.tokenizer.encode(p) for p in shared]
    n_shared = hf_prefix.usable_prefix_len(ids)
    assert n_shared >= 60
    monkeypatch.setattr(embedded_backend, "prefix_cache", None)  # the chunk-shared prefill without the cross-call cache
    reqs = [GenerationRequest(p, n=2, max_tokens=8, temperature=0.7, seed=i) for i, p in enumerate(shared)]
    with forward_shapes(embedded_backend) as shapes:
        fast = embedded_backend.generate(reqs)
    widths = [width for _, width in shapes]
    assert widths[0] == n_shared  # the header ran once, then only the suffixes, then one-token steps
    assert max(widths[1:]) == max(map(len, ids)) - n_shared
    monkeypatch.setattr(embedded_backend, "share_prefix", False)
    with forward_shapes(embedded_backend) as shapes:
        slow = embedded_backend.generate(reqs)
    assert shapes[0][1] == max(map(len, ids))  # whole prompts
    for a, b in zip(fast, slow):
        assert [c.token_ids for c in a] == [c.token_ids for c in b]
        for ca, cb in zip(a, b):
            assert ca.logprobs == pytest.approx(cb.logprobs, abs=1e-3)


def test_identical_prompts_prefilled_once(embedded_backend, prompts) -> None:  # type: ignore[no-untyped-def]
    before = embedded_backend.stats.extra.get("prefill_rows", 0)
    out = embedded_backend.generate([GenerationRequest(prompts[2], max_tokens=2, temperature=0)] * 3)
    assert embedded_backend.stats.extra["prefill_rows"] - before == 1
    assert len({tuple(o[0].token_ids) for o in out}) == 1


def test_eos_is_stop_and_not_in_tokens(embedded_backend) -> None:  # type: ignore[no-untyped-def]
    prompt = embedded_backend.format_chat([{"role": "user", "content": "Reply with one word: yes or no?"}])
    [[c]] = embedded_backend.generate([GenerationRequest(prompt, max_tokens=12, temperature=0)])
    assert c.finish_reason is FinishReason.STOP and c.stop_reason is None
    assert not set(c.token_ids) & embedded_backend.eos_ids and len(c.token_ids) < 12


def test_next_token_logprobs_one_pass_equals_pair_scoring(embedded_backend, prompts) -> None:  # type: ignore[no-untyped-def]
    from mcts_agent.llm.types import Backend

    cands = ["Yes", "No"]
    header = "You judge arithmetic. Example: 2 + 2 = 4 is correct. Example: 3 + 3 = 7 is wrong. " * 3
    prompts = [header + p + " Is this correct?" for p in prompts] + list(prompts)  # shared prefix, then none
    from mcts_agent.llm import hf_prefix

    assert hf_prefix.common_prefix_len([embedded_backend.tokenizer.encode(p) for p in prompts[:3]]) >= 16
    before = embedded_backend.stats.score_calls
    fast = embedded_backend.next_token_logprobs(prompts, cands)
    assert embedded_backend.stats.score_calls == before + 1
    slow = Backend.next_token_logprobs(embedded_backend, prompts, cands)  # the generic pair-scoring path
    assert len(fast) == len(prompts) and all(len(r) == 2 for r in fast)
    for a, b in zip(fast, slow):
        assert a == pytest.approx(b, abs=1e-3)
    shared_only = embedded_backend.next_token_logprobs(prompts[:3], cands)  # all share the header
    for a, b in zip(shared_only, fast[:3]):
        assert a == pytest.approx(b, abs=1e-3)
    # Multi-token candidates fall back to pair scoring.
    multi = embedded_backend.next_token_logprobs(prompts[:1], ["Yes, it is correct"])
    assert multi[0][0] == pytest.approx(embedded_backend.score(prompts[:1], ["Yes, it is correct"])[0], abs=1e-3)

"""The cross-call prefix cache: the radix tree alone, then the transformers backend with it on
and off (same tokens and log-probabilities, same MCTS trees, the memory bound held)."""

from __future__ import annotations

import pytest
import torch

from mcts_agent.llm.kv_radix import KVRadixTree
from mcts_agent.llm.types import EvalSuffix, GenerationRequest

TOL = 1e-4
TOKEN_BYTES = 2 * 2 * 4  # one layer, keys and values, one head of width 2, float32


def fake_kv(ids: list[int], tag: float = 0.0):  # type: ignore[no-untyped-def]
    """A ``kv(start, end)`` whose values record (token, position, tag), so pieces can be checked."""
    def kv(a: int, e: int) -> torch.Tensor:
        out = torch.zeros((1, 2, 1, e - a, 2))
        out[0, 0, 0, :, 0] = torch.tensor(ids[a:e], dtype=torch.float32)
        out[0, 0, 0, :, 1] = torch.arange(a, e, dtype=torch.float32)
        out[0, 1] = tag
        return out
    return kv


def joined(pieces) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return torch.cat([kv[:, :, :, :take] for kv, take in pieces], dim=3)


def test_insert_and_longest_prefix_lookup() -> None:
    tree = KVRadixTree(10**6, TOKEN_BYTES)
    assert tree.match([1, 2, 3]) == (0, [])
    assert tree.insert([1, 2, 3, 4], fake_kv([1, 2, 3, 4])) == 4
    n, pieces = tree.match([1, 2, 3, 9, 9])
    assert n == 3 and joined(pieces)[0, 0, 0, :, 0].tolist() == [1, 2, 3]
    assert tree.insert([1, 2, 5, 6], fake_kv([1, 2, 5, 6], tag=1.0)) == 2  # splits the first node after [1, 2]
    n, pieces = tree.match([1, 2, 5, 6, 7])
    kv = joined(pieces)
    assert n == 4 and kv[0, 0, 0, :, 0].tolist() == [1, 2, 5, 6] and kv[0, 0, 0, :, 1].tolist() == [0, 1, 2, 3]
    assert kv[0, 1, 0, :, 0].tolist() == [0, 0, 1, 1]  # the shared part came from the first insert
    assert tree.match([1, 2, 3, 4])[0] == 4 and tree.match([1, 2, 3, 4], limit=3)[0] == 3
    assert tree.insert([1, 2, 3], fake_kv([1, 2, 3])) == 0  # already held
    assert tree.cached_tokens == 6 and tree.bytes == 6 * TOKEN_BYTES


def test_lru_leaves_are_evicted_within_the_bound() -> None:
    tree = KVRadixTree(10 * TOKEN_BYTES, TOKEN_BYTES)
    a, b, c = [1] * 6, [2] * 4, [3] * 3
    tree.insert(a, fake_kv(a))
    tree.insert(b, fake_kv(b))
    assert tree.bytes == tree.max_bytes
    tree.match(a)  # a is now more recently used than b
    assert tree.insert(c, fake_kv(c)) == 3
    assert tree.match(b)[0] == 0 and tree.match(a)[0] == 6 and tree.match(c)[0] == 3
    assert tree.stats.evicted_tokens == 4
    long = list(range(100, 130))
    assert tree.insert(long, fake_kv(long)) == 10  # truncated to what fits after evicting everything else
    assert tree.match(long)[0] == 10 and tree.match(a)[0] == 0
    assert tree.stats.peak_bytes <= tree.max_bytes and tree.bytes <= tree.max_bytes
    # a path being extended is never evicted under itself
    tree.insert(long + [7, 7], fake_kv(long + [7, 7]))
    assert tree.match(long)[0] == 10


def test_theoretical_maximum_ignores_the_bound() -> None:
    tree = KVRadixTree(2 * TOKEN_BYTES, TOKEN_BYTES)  # almost nothing fits
    assert tree.observe([5, 6, 7, 8]) == 0
    tree.insert([5, 6, 7, 8, 9], fake_kv([5, 6, 7, 8, 9]))
    assert tree.observe([5, 6, 7, 1], limit=3) == 3
    assert tree.observe([5, 6, 7, 8, 9, 10]) == 5  # the whole inserted sequence, though only 2 tokens are held
    n, _ = tree.lookup([5, 6, 7, 8, 9, 10])
    tree.record(6, n)
    st = tree.stats
    assert (st.lookups, st.hits, st.reused_tokens, st.prompt_tokens, st.max_reusable_tokens) == (1, 1, 2, 6, 8)
    assert st.reuse_of_max == pytest.approx(2 / 8)
    tree.clear()
    assert tree.bytes == 0 and tree.stats.lookups == 0 and tree.observe([5, 6]) == 0


# ---------------------------------------------------------------------- on the embedded model

QUESTIONS = ["What is 12 + 7?", "Tom has 3 apples and buys 5 more. How many apples does he have now?",
             "A train travels 60 miles in 2 hours. What is its speed?"]


@pytest.fixture
def cache_gb(embedded_backend):  # type: ignore[no-untyped-def]
    """Set the shared backend's prefix cache for one test (an empty one), restored afterwards."""
    before = embedded_backend.prefix_cache_gb
    yield embedded_backend.set_prefix_cache
    embedded_backend.set_prefix_cache(before)


def two_rounds(backend):  # type: ignore[no-untyped-def]
    """Round 1: sampled steps of three prompts (with fused evaluation); round 2: every child
    (prompt + step) plus one new prompt, in one call — mixed cached lengths in one chunk."""
    prompts = [backend.format_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    spec = EvalSuffix("\nIs this step correct? Answer:", (" Yes", " No"))
    first = backend.generate([GenerationRequest(p, n=2, max_tokens=12, temperature=1.0, seed=i, stop=("\n",),
                                                evaluate=spec) for i, p in enumerate(prompts[:2])])
    children = [p + c.text + "\n" for p, comps in zip(prompts, first) for c in comps]
    second = backend.generate([GenerationRequest(p, n=2, max_tokens=10, temperature=1.0, seed=10 + i)
                               for i, p in enumerate(children + prompts[2:])]
                              + [GenerationRequest(children[0], max_tokens=6, temperature=0.0)])
    return first + second


def same(a, b) -> None:  # type: ignore[no-untyped-def]
    for ca, cb in zip(a, b, strict=True):
        assert len(ca) == len(cb)
        for x, y in zip(ca, cb):
            assert x.token_ids == y.token_ids and x.text == y.text
            assert x.logprobs == pytest.approx(y.logprobs, abs=TOL)
            assert (x.evaluation is None) == (y.evaluation is None)
            if x.evaluation is not None:
                assert x.evaluation.logprobs == pytest.approx(y.evaluation.logprobs, abs=TOL)


@pytest.fixture(scope="module")
def uncached(embedded_backend):  # type: ignore[no-untyped-def]
    before = embedded_backend.prefix_cache_gb
    embedded_backend.set_prefix_cache(0)
    try:
        return two_rounds(embedded_backend)
    finally:
        embedded_backend.set_prefix_cache(before)


@pytest.mark.model
def test_cached_generation_equals_uncached(embedded_backend, uncached, cache_gb) -> None:  # type: ignore[no-untyped-def]
    cache_gb(1.0)
    cached = two_rounds(embedded_backend)
    same(cached, uncached)
    x = embedded_backend.stats.extra
    assert x["prefix_cache_hits"] >= 5 and x["prefix_cache_reused_tokens"] > 0.5 * x["prefix_cache_prompt_tokens"]
    assert x["prefix_cache_reuse_of_max"] >= 0.8
    assert any(e is not None for comps in cached[:2] for c in comps for e in [c.evaluation])
    # the cached prefix copied one position off changes the logits far beyond the tolerance
    tree = embedded_backend.prefix_cache
    prompt = embedded_backend.format_chat([{"role": "user", "content": QUESTIONS[0]}])
    ids = embedded_backend.tokenizer.encode(prompt)
    n, pieces = tree.match(ids, len(ids) - 1)
    assert n == len(ids) - 1
    with torch.inference_mode():
        right = embedded_backend._run_on_prefixes([ids], [(n, pieces)], len(ids) - n, n)[0].logits[0, -1]
        kv = joined(pieces)  # copied one slot late: a blank first slot, the last cached token lost
        shifted = [(torch.cat([torch.zeros_like(kv[:, :, :, :1]), kv[:, :, :, :-1]], dim=3), n)]
        wrong = embedded_backend._run_on_prefixes([ids], [(n, shifted)], len(ids) - n, n)[0].logits[0, -1]
        whole = embedded_backend._last_logits([ids])[0]
    assert (right - whole).abs().max().item() < 10 * TOL
    assert (right - wrong).abs().max().item() > 100 * TOL


@pytest.mark.model
def test_bound_is_respected_and_results_unchanged(embedded_backend, uncached, cache_gb) -> None:  # type: ignore[no-untyped-def]
    cache_gb(120 * embedded_backend.kv_token_bytes / 2**30)  # ~120 tokens: evictions every call
    same(two_rounds(embedded_backend), uncached)
    x, tree = embedded_backend.stats.extra, embedded_backend.prefix_cache
    assert x["prefix_cache_evicted_tokens"] > 0 and x["prefix_cache_reused_tokens"] > 0
    assert tree.stats.peak_bytes <= tree.max_bytes == x["prefix_cache_bound_bytes"]
    assert x["prefix_cache_peak_bytes"] <= x["prefix_cache_bound_bytes"]


@pytest.mark.model
def test_critic_prompts_read_and_fill_the_cache(embedded_backend, cache_gb) -> None:  # type: ignore[no-untyped-def]
    """A fresh evaluation conversation per node: the children's prompts read the parent's,
    which the first call put in the cache; values equal the uncached ones."""
    head = embedded_backend.format_chat([{"role": "system", "content": "Judge each partial solution. " * 8},
                                         {"role": "user", "content": "Problem: " + QUESTIONS[0] + "\nSteps:\n1. I count"}])
    parent = [head + " the apples.\nCorrect so far?"]
    children = [head + f" the apples.\n2. Then I add {k} more.\nCorrect so far?" for k in range(3)]
    cache_gb(0)
    want = embedded_backend.next_token_logprobs(parent + children, ["Yes", "No"])
    cache_gb(1.0)
    x = embedded_backend.stats.extra
    before = x.get("prefix_cache_score_reused_tokens", 0)
    got = embedded_backend.next_token_logprobs(parent, ["Yes", "No"])
    first = x["prefix_cache_score_reused_tokens"] - before
    got += embedded_backend.next_token_logprobs(children, ["Yes", "No"])
    reused = x["prefix_cache_score_reused_tokens"] - before - first
    tok = embedded_backend.tokenizer
    shared = len(tok.encode(head + " the apples.\n", add_special_tokens=False)) - 1
    assert first == 0 and reused >= 3 * shared  # every child read the parent's problem and step
    for a, b in zip(got, want, strict=True):
        assert a == pytest.approx(b, abs=TOL)


@pytest.mark.model
@pytest.mark.parametrize("mode", ["turn", "chat"])
def test_search_trees_equal_with_cache_on_and_off(embedded_backend, cache_gb, mode) -> None:  # type: ignore[no-untyped-def]
    from mcts_agent import envs
    from mcts_agent.critics import SelfEvalConfig, SelfEvalCritic
    from mcts_agent.envs.math.gsm8k import SAMPLE_TASKS
    from mcts_agent.search import Planner, SearchConfig

    def search():  # type: ignore[no-untyped-def]
        env = envs.make("math/gsm8k", tasks=SAMPLE_TASKS, max_steps=3)
        critic = SelfEvalCritic(embedded_backend, SelfEvalConfig(mode=mode))
        cfg = SearchConfig(simulations=3, branching=2, max_step_tokens=20, seed=5, fused_eval=False)
        return Planner(embedded_backend, env, cfg, critic).run(list(SAMPLE_TASKS))

    cache_gb(0)
    off = search()
    cache_gb(1.0)
    scored = embedded_backend.stats.extra.get("prefix_cache_score_reused_tokens", 0)
    on = search()
    x = embedded_backend.stats.extra
    assert x["prefix_cache_reused_tokens"] > 0 and x["prefix_cache_reuse_of_max"] >= 0.8
    assert x["prefix_cache_score_reused_tokens"] > scored  # turn: the policy's prompt + step; chat: earlier evaluations
    for a, b in zip(on, off, strict=True):
        assert [(n.parent, n.action, n.visits, n.terminal) for n in a.nodes] == \
               [(n.parent, n.action, n.visits, n.terminal) for n in b.nodes]
        assert [n.value for n in a.nodes] == pytest.approx([n.value for n in b.nodes], abs=TOL)
        assert a.answer == b.answer
    assert sum(len(t.nodes) for t in on) > 2 * len(on)


@pytest.mark.model
def test_option_validation_and_stock_cache(embedded_backend, cache_gb, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from mcts_agent.errors import ConfigError
    from mcts_agent.llm.transformers_backend import TransformersBackend

    with pytest.raises(ConfigError, match="prefix_cache_gb"):
        TransformersBackend(prefix_cache_gb=-1)
    cache_gb(0)
    assert embedded_backend.prefix_cache is None
    monkeypatch.setattr(embedded_backend, "use_buffer", False)
    cache_gb(1.0)
    assert embedded_backend.prefix_cache is None  # no KV buffer (sliding-window models): off


def test_engine_prefix_figures_count_against_the_trees_maximum() -> None:
    """``search_efficiency`` reports an engine's own cache hits (vLLM's num_cached_tokens) against
    the longest earlier prompt or prompt + completion each prompt extends."""
    from mcts_agent.benchmarks.search_efficiency import Recording, engine_prefix_figures
    from mcts_agent.llm.scripted import ScriptedBackend

    class Engine(ScriptedBackend):
        def _prompt_ids(self, prompt: str) -> list[int]:
            return [ord(c) for c in prompt]

    engine = Engine(lambda prompt, i: "xy")
    rec = Recording(engine)
    assert engine_prefix_figures(engine, rec, 0.0) == {}  # no engine cache statistics: nothing to report
    engine.stats.extra["cached_prompt_tokens"] = 0.0
    rec.generate([GenerationRequest("abcd", max_tokens=4), GenerationRequest("abce", max_tokens=4)])
    rec.generate([GenerationRequest("abcdxyz", max_tokens=4)])  # extends "abcd" + its completion "xy"
    engine.stats.extra["cached_prompt_tokens"] = 7.0  # what the engine says it found
    got = engine_prefix_figures(engine, rec, 1.0)
    # reusable: "abcd" 0, "abce" 3 ("abc"), "abcdxyz" 6 ("abcdxy", its last token always runs)
    assert got == {"engine_cached_prompt_tokens": 6, "engine_prompt_tokens": 15, "engine_max_reusable_tokens": 9,
                   "engine_prefix_hit_rate": round(6 / 15, 4), "engine_reuse_of_max": round(6 / 9, 4)}

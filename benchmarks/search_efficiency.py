"""Planner efficiency: generated tokens/s inside MCTS against the same backend's raw tokens/s.

Runs MCTS over T trees at once (each round: ONE policy call of T prompts x k samples),
recording every batch the planner sends; then replays exactly those batches straight
through ``backend.generate`` and times them. Side by side, in one process:

* ``ratio``            search tokens/s ÷ raw tokens/s of the same batches   (target >= 0.8)
* ``outside_fraction`` share of search wall time outside policy and critic calls (target < 5%)
* ``prefix_sharing_speedup`` the raw replay with every prompt prefilled whole ÷ with the
  batch's common prompt prefix run once (transformers backend only, prefix cache off)
* ``engine_*``         backends with a prefix cache of their own (vLLM): prompt tokens the
  engine found cached during the search, as a share of all prompt tokens and of the tree's
  theoretical maximum
* ``prefix_cache_*``     the cross-call prefix cache (transformers ``prefix_cache_gb``) during
  the search: reused prompt tokens as a share of the tree's theoretical maximum (for each
  prompt, the longest prefix shared with any earlier prompt or sequence; target >= 0.8),
  reused tokens, peak bytes held against the bound, and the raw replay's tokens/s with the
  cache on (it starts empty) and off side by side (``prefix_cache_speedup`` = on ÷ off);
  ``critic_cached_*``: the critic's prompt tokens read from that cache during the search

Run without a critic and with the self-eval critic (one batched forward pass per round):
critic passes are model time too, but they produce no generated tokens. A row is
``CRITIC[/MODE][+fused]``: ``self-eval/turn`` asks in the policy's own chat (a prompt that
extends the policy's), ``+fused`` lets generation score it off its KV cache
(``SearchConfig.fused_eval``; the other rows run with it off). The replay of a fused row
sends its batches without the evaluation, so "raw" is plain generation in every row.

    python -m mcts_agent.benchmarks.search_efficiency --tasks 16 --simulations 4 --branching 4
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from typing import Sequence

from mcts_agent.benchmarks.common import print_table, write_result
from mcts_agent.llm.types import Backend, Completion, GenerationRequest


class Recording(Backend):
    """Passes calls through to ``inner`` and keeps every generate batch."""

    def __init__(self, inner: Backend) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self.batches: list[list[GenerationRequest]] = []
        self.outputs: list[list[list[Completion]]] = []
        self.supports_fused_eval = inner.supports_fused_eval

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        self.batches.append(list(requests))
        out = self.inner.generate(requests)
        self.outputs.append(out)
        return out

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        return self.inner.score(prompts, continuations)

    def format_chat(self, messages):  # type: ignore[no-untyped-def]
        return self.inner.format_chat(messages)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def replay(backend: Backend, batches: list[list[GenerationRequest]]) -> tuple[int, float]:
    """Send ``batches`` straight to ``backend``; return (generated tokens, seconds)."""
    tokens, t0 = 0, time.perf_counter()
    for batch in batches:
        plain = [replace(r, evaluate=None) for r in batch]
        tokens += sum(len(c.token_ids) for comps in backend.generate(plain) for c in comps)
    return tokens, time.perf_counter() - t0


def engine_prefix_figures(backend: Backend, rec: Recording, cached_before: float) -> dict:
    """The engine's own prefix cache during the search (vLLM: ``num_cached_tokens`` of each
    prompt) against the tree's theoretical maximum: for each prompt, in the order sent, its
    longest token prefix shared with an earlier prompt or prompt + completion (no block
    rounding, no eviction)."""
    from mcts_agent.llm.kv_radix import KVRadixTree

    encode = getattr(backend, "_prompt_ids", None)
    if encode is None or "cached_prompt_tokens" not in backend.stats.extra:
        return {}
    seen = KVRadixTree(0, 0, store=False)
    prompt_tokens = 0
    for batch, outs in zip(rec.batches, rec.outputs):
        ids = [encode(r.prompt) for r in batch]
        for p in ids:
            prompt_tokens += len(p)
            seen.observe(p, len(p) - 1)
        for p, comps in zip(ids, outs):
            for c in comps:
                seen.insert(list(p) + list(c.token_ids))
    reusable = seen.stats.max_reusable_tokens
    cached = backend.stats.extra["cached_prompt_tokens"] - cached_before
    return {"engine_cached_prompt_tokens": int(cached), "engine_prompt_tokens": prompt_tokens,
            "engine_max_reusable_tokens": reusable,
            "engine_prefix_hit_rate": round(cached / prompt_tokens, 4) if prompt_tokens else 0.0,
            "engine_reuse_of_max": round(cached / reusable, 4) if reusable else 1.0}


def parse_row(spec: str) -> tuple[str, str | None, bool]:
    """``"self-eval/turn+fused"`` -> ``("self-eval", "turn", True)``."""
    rest, plus, flag = spec.strip().partition("+")
    if plus and flag != "fused":
        raise SystemExit(f"--critics: row {spec!r} ends in '+{flag}'; expected CRITIC[/MODE][+fused]")
    name, _, mode = rest.partition("/")
    return name, mode or None, bool(plus)


def measure(backend: Backend, tasks, env, row: str, args: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    from mcts_agent.critics import make_critic
    from mcts_agent.search import Planner, SearchConfig

    critic_name, mode, fused = parse_row(row)
    rec = Recording(backend)
    critic = None if critic_name == "none" else make_critic(critic_name, backend, env, **({"mode": mode} if mode else {}))
    cfg = SearchConfig(simulations=args.simulations, branching=args.branching, max_step_tokens=args.max_step_tokens,
                       max_trees_in_flight=len(tasks), seed=args.seed, fused_eval=fused)
    fused_before = backend.stats.extra.get("fused_eval_seconds", 0.0)
    critic_before = {k: backend.stats.extra.get(k, 0) for k in CRITIC_CACHE_KEYS}
    engine_cached_before = backend.stats.extra.get("cached_prompt_tokens", 0.0)
    cache_gb = getattr(backend, "prefix_cache_gb", 0.0)
    if cache_gb:
        backend.set_prefix_cache(cache_gb)  # type: ignore[attr-defined] # each search starts with an empty cache
    planner = Planner(rec, env, cfg, critic)
    planner.run(tasks)
    s = planner.stats
    fused_seconds = backend.stats.extra.get("fused_eval_seconds", 0.0) - fused_before
    search_tps = s.generated_tokens / s.wall_seconds
    row_extra: dict = prefix_cache_figures(backend) if cache_gb else {}
    if cache_gb and critic is not None:  # critic prompts read from (and written to) the same cache
        reused, total = (backend.stats.extra.get(k, 0) - critic_before[k] for k in CRITIC_CACHE_KEYS)
        row_extra.update({"critic_cached_tokens": reused, "critic_prompt_tokens": total,
                          "critic_cached_share": round(reused / total, 3) if total else 0.0})
    row_extra.update(engine_prefix_figures(backend, rec, engine_cached_before))
    # Replay the very same batches directly (same prompts, n, seeds, stop strings).
    if cache_gb:
        backend.set_prefix_cache(cache_gb)  # type: ignore[attr-defined]
    raw_tokens, raw_seconds = replay(backend, rec.batches)
    raw_tps = raw_tokens / raw_seconds
    if cache_gb:  # the same batches with the prefix cache off
        backend.set_prefix_cache(0)  # type: ignore[attr-defined]
        off_tokens, off_seconds = replay(backend, rec.batches)
        row_extra.update({"raw_tok_s_cache_off": round(off_tokens / off_seconds, 1),
                          "prefix_cache_speedup": round((raw_tokens / raw_seconds) / (off_tokens / off_seconds), 3)})
    if getattr(backend, "share_prefix", False):  # the same batches again, every prompt prefilled whole
        backend.share_prefix = False
        whole = replay(backend, rec.batches)[1]
        backend.share_prefix = True
        base = off_seconds if cache_gb else raw_seconds
        row_extra.update({"raw_whole_prompt_seconds": round(whole, 2), "prefix_sharing_speedup": round(whole / base, 3)})
    if cache_gb:
        backend.set_prefix_cache(cache_gb)  # type: ignore[attr-defined]
    return {
        "critic": row.strip(), "trees": len(tasks), "rounds": s.rounds,
        "mean_batch_rows": round(sum(s.batch_sizes) / len(s.batch_sizes), 1),
        "search_tokens": s.generated_tokens, "search_seconds": round(s.wall_seconds, 2),
        "search_tok_s": round(search_tps, 1), "raw_tokens": raw_tokens, "raw_seconds": round(raw_seconds, 2),
        "raw_tok_s": round(raw_tps, 1), "ratio": round(search_tps / raw_tps, 3),
        "policy_share": round(s.policy_seconds / s.wall_seconds, 3),
        "critic_share": round(s.critic_seconds / s.wall_seconds, 3),
        "fused_eval_share": round(fused_seconds / s.wall_seconds, 3),  # inside policy_share
        "fused_nodes": getattr(critic, "fused", 0), "critic_scored_nodes": getattr(critic, "scored", 0),
        "outside_fraction": round(s.outside_model_fraction, 4), **row_extra,
    }


CRITIC_CACHE_KEYS = ("prefix_cache_score_reused_tokens", "prefix_cache_score_prompt_tokens")


def prefix_cache_figures(backend: Backend) -> dict:
    """The prefix cache's statistics since it was last reset (``backend.stats.extra``)."""
    x = backend.stats.extra
    return {
        "prefix_cache_reuse_of_max": x.get("prefix_cache_reuse_of_max", 0.0),
        "prefix_cache_reused_tokens": x.get("prefix_cache_reused_tokens", 0),
        "prefix_cache_max_reusable_tokens": x.get("prefix_cache_max_reusable_tokens", 0),
        "prefix_cache_prompt_tokens": x.get("prefix_cache_prompt_tokens", 0),
        "prefix_cache_peak_mb": round(x.get("prefix_cache_peak_bytes", 0) / 2**20, 1),
        "prefix_cache_bound_mb": round(x.get("prefix_cache_bound_bytes", 0) / 2**20, 1),
        "prefix_cache_evicted_tokens": x.get("prefix_cache_evicted_tokens", 0),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="math/gsm8k")
    p.add_argument("--data", default=None, help="task file; env default if omitted")
    p.add_argument("--tasks", type=int, default=16, help="trees in flight")
    p.add_argument("--simulations", type=int, default=4)
    p.add_argument("--branching", type=int, default=4)
    p.add_argument("--max-step-tokens", type=int, default=48)
    p.add_argument("--critics", default="none,self-eval,self-eval/turn,self-eval/turn+fused",
                   help="comma-separated rows CRITIC[/MODE][+fused] (MODE: self-eval's chat | suffix | turn)")
    p.add_argument("--backend", default="transformers")
    p.add_argument("--model", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix-cache-gb", type=float, default=None,
                   help="transformers: bound of the cross-call prefix cache (0: off; default: the backend's)")
    p.add_argument("--out", default="results/search_efficiency.json")
    args = p.parse_args(argv)
    load = os.getloadavg()

    from mcts_agent import envs
    from mcts_agent.llm import load_backend

    tasks = envs.load_tasks(args.env, path=args.data, limit=args.tasks, seed=args.seed)
    env = envs.make(args.env, max_steps=4)
    options = {} if args.prefix_cache_gb is None else {"prefix_cache_gb": args.prefix_cache_gb}
    backend = load_backend(args.backend, args.model, **options)
    backend.generate([GenerationRequest(prompt="Warm up.", max_tokens=4)])
    rows = [measure(backend, tasks, env, c, args) for c in args.critics.split(",")]
    backend.close()
    print_table("MCTS tokens/s against the same batches replayed raw", rows,
                ["critic", "trees", "mean_batch_rows", "search_tok_s", "raw_tok_s", "ratio", "policy_share",
                 "critic_share", "fused_eval_share", "fused_nodes", "outside_fraction", "prefix_sharing_speedup"])
    if any("prefix_cache_speedup" in r for r in rows):
        print_table("Prefix cache across rounds (search: reuse; raw replay: tokens/s on vs off)", rows,
                    ["critic", "prefix_cache_reuse_of_max", "prefix_cache_reused_tokens",
                     "prefix_cache_max_reusable_tokens", "prefix_cache_prompt_tokens", "prefix_cache_peak_mb",
                     "prefix_cache_bound_mb", "critic_cached_tokens", "critic_prompt_tokens", "raw_tok_s",
                     "raw_tok_s_cache_off", "prefix_cache_speedup"])
    if any("engine_prefix_hit_rate" in r for r in rows):
        print_table("The engine's own prefix cache during the search (vLLM num_cached_tokens)", rows,
                    ["critic", "engine_cached_prompt_tokens", "engine_prompt_tokens", "engine_max_reusable_tokens",
                     "engine_prefix_hit_rate", "engine_reuse_of_max"])
    return write_result(args.out, "search_efficiency", vars(args), rows, load_average_at_start=[round(x, 2) for x in load],
                        targets={"ratio": ">= 0.8", "outside_fraction": "< 0.05", "prefix_cache_reuse_of_max": ">= 0.8"})


if __name__ == "__main__":
    main()

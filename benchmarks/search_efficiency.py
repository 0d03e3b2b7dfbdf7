"""Planner efficiency: generated tokens/s inside MCTS against the same backend's raw tokens/s.

Runs MCTS over T trees at once (each round: ONE policy call of T prompts x k samples),
recording every batch the planner sends; then replays exactly those batches straight
through ``backend.generate`` and times them. Side by side, in one process:

* ``ratio``            search tokens/s ÷ raw tokens/s of the same batches   (target >= 0.8)
* ``outside_fraction`` share of search wall time outside policy and critic calls (target < 5%)
* ``prefix_sharing_speedup`` the raw replay with every prompt prefilled whole ÷ with the
  batch's common prompt prefix run once (transformers backend only)

Run with the critic (self-eval, one batched forward pass per round) and without it:
critic passes are model time too, but they produce no generated tokens.

    python -m mcts_agent.benchmarks.search_efficiency --tasks 16 --simulations 4 --branching 4
"""

from __future__ import annotations

import argparse
import time
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

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        self.batches.append(list(requests))
        return self.inner.generate(requests)

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
        tokens += sum(len(c.token_ids) for comps in backend.generate(batch) for c in comps)
    return tokens, time.perf_counter() - t0


def measure(backend: Backend, tasks, env, critic_name: str, args: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    from mcts_agent.critics import make_critic
    from mcts_agent.search import Planner, SearchConfig

    rec = Recording(backend)
    critic = None if critic_name == "none" else make_critic(critic_name, backend, env)
    cfg = SearchConfig(simulations=args.simulations, branching=args.branching, max_step_tokens=args.max_step_tokens,
                       max_trees_in_flight=len(tasks), seed=args.seed)
    planner = Planner(rec, env, cfg, critic)
    planner.run(tasks)
    s = planner.stats
    search_tps = s.generated_tokens / s.wall_seconds
    # Replay the very same batches directly (same prompts, n, seeds, stop strings).
    raw_tokens, raw_seconds = replay(backend, rec.batches)
    raw_tps = raw_tokens / raw_seconds
    row_extra = {}
    if getattr(backend, "share_prefix", False):  # the same batches again, every prompt prefilled whole
        backend.share_prefix = False
        whole = replay(backend, rec.batches)[1]
        backend.share_prefix = True
        row_extra = {"raw_whole_prompt_seconds": round(whole, 2), "prefix_sharing_speedup": round(whole / raw_seconds, 3)}
    return {
        "critic": critic_name, "trees": len(tasks), "rounds": s.rounds,
        "mean_batch_rows": round(sum(s.batch_sizes) / len(s.batch_sizes), 1),
        "search_tokens": s.generated_tokens, "search_seconds": round(s.wall_seconds, 2),
        "search_tok_s": round(search_tps, 1), "raw_tokens": raw_tokens, "raw_seconds": round(raw_seconds, 2),
        "raw_tok_s": round(raw_tps, 1), "ratio": round(search_tps / raw_tps, 3),
        "policy_share": round(s.policy_seconds / s.wall_seconds, 3),
        "critic_share": round(s.critic_seconds / s.wall_seconds, 3),
        "outside_fraction": round(s.outside_model_fraction, 4), **row_extra,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="math/gsm8k")
    p.add_argument("--data", default=None, help="task file; env default if omitted")
    p.add_argument("--tasks", type=int, default=16, help="trees in flight")
    p.add_argument("--simulations", type=int, default=4)
    p.add_argument("--branching", type=int, default=4)
    p.add_argument("--max-step-tokens", type=int, default=48)
    p.add_argument("--critics", default="none,self-eval", help="comma-separated critic names")
    p.add_argument("--backend", default="transformers")
    p.add_argument("--model", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/search_efficiency.json")
    args = p.parse_args(argv)

    from mcts_agent import envs
    from mcts_agent.llm import load_backend

    tasks = envs.load_tasks(args.env, path=args.data, limit=args.tasks, seed=args.seed)
    env = envs.make(args.env, max_steps=4)
    backend = load_backend(args.backend, args.model)
    backend.generate([GenerationRequest(prompt="Warm up.", max_tokens=4)])
    rows = [measure(backend, tasks, env, c, args) for c in args.critics.split(",")]
    backend.close()
    print_table("MCTS tokens/s against the same batches replayed raw", rows,
                ["critic", "trees", "mean_batch_rows", "search_tok_s", "raw_tok_s", "ratio", "policy_share",
                 "critic_share", "outside_fraction", "prefix_sharing_speedup"])
    return write_result(args.out, "search_efficiency", vars(args), rows,
                        targets={"ratio": ">= 0.8", "outside_fraction": "< 0.05"})


if __name__ == "__main__":
    main()

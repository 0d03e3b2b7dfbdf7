"""Generated tokens per second of each policy backend at several batch sizes, side by side.

    python -m mcts_agent.benchmarks.backend_throughput --backends hf,transformers,vllm,openai \\
        --batch-sizes 1,8,32,64 --max-tokens 64 --out results/backend_throughput.json

Backends: ``hf`` (plain ``model.generate``, the reference), ``transformers``
(TransformersBackend), ``vllm`` (VLLMBackend, offline engine), ``openai`` (OpenAIBackend
against ``--openai-url``, or a ``vllm serve`` this script starts and stops). All see the
same prompts with greedy decoding and the same ``max_tokens``; EOS may end a completion
early, so throughput counts the tokens actually generated. One backend is loaded at a time.
A backend that cannot load is reported as an error and the run goes on.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from mcts_agent.benchmarks.common import machine, print_table
from mcts_agent.io import atomic_write_json

TOPICS = ["a lighthouse keeper", "a lost robot", "the first snow", "a river town", "an old map", "a quiet library",
          "a desert caravan", "a clockmaker", "a night train", "a small garden", "a mountain pass", "a busy market",
          "a paper boat", "a winter festival", "a sleepy dragon", "a distant star"]


def make_prompts(n: int) -> list[str]:
    """``n`` distinct prompts of similar length that invite long answers."""
    return [f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]} (story number {i + 1}). Begin:\n"
            for i in range(n)]


# -- runners: each returns (load_seconds, generate(prompts) -> generated token count, close) ------------

Runner = tuple[float, Callable[[list[str]], int], Callable[[], None]]


def hf_runner(model_dir: str, max_tokens: int) -> Runner:
    """Plain transformers ``model.generate`` with left padding: the reference baseline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    load = time.perf_counter() - start

    def generate(prompts: list[str]) -> int:
        enc = tok(prompts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        total = 0
        for row in new.tolist():  # tokens up to and including the first EOS
            total += next((i + 1 for i, t in enumerate(row) if t == tok.eos_token_id), len(row))
        return total

    return load, generate, lambda: None


def backend_runner(make: Callable[[], Any], max_tokens: int) -> Runner:
    """Any ``Backend``: one batched greedy ``generate`` call per measurement."""
    from mcts_agent.llm.types import GenerationRequest

    start = time.perf_counter()
    backend = make()
    load = time.perf_counter() - start

    def generate(prompts: list[str]) -> int:
        out = backend.generate([GenerationRequest(p, max_tokens=max_tokens, temperature=0.0) for p in prompts])
        return sum(len(c.token_ids) or len(c.logprobs) for cs in out for c in cs)

    return load, generate, backend.close


def measure(name: str, runner: Runner, batch_sizes: Sequence[int], prompts: list[str],
            repeats: int = 1) -> list[dict[str, Any]]:
    load, generate, close = runner
    rows = []
    try:
        generate(prompts[:1])  # warm-up (compiles kernels, fills caches)
        for bs in batch_sizes:
            secs, tokens = math.inf, 0
            for _ in range(repeats):  # best of ``repeats``: other work on the machine only slows runs down
                start = time.perf_counter()
                n = generate(prompts[:bs])
                elapsed = time.perf_counter() - start
                if elapsed < secs:
                    secs, tokens = elapsed, n
            row = {"backend": name, "batch_size": bs, "generated_tokens": tokens, "seconds": round(secs, 3),
                   "tokens_per_s": round(tokens / secs, 1), "load_seconds": round(load, 1),
                   "loadavg_1m": round(os.getloadavg()[0], 2)}  # other work on the machine skews numbers
            print(f"  {name:>12} batch {bs:>3}: {tokens:>5} tokens in {secs:7.2f}s = {row['tokens_per_s']:7.1f} tok/s"
                  f" (load avg {row['loadavg_1m']})", flush=True)
            rows.append(row)
    finally:
        close()
    return rows


def run_backend(name: str, args: argparse.Namespace, model_dir: str, prompts: list[str]) -> tuple[list[dict], dict]:
    """Measure one backend; returns (rows, extra info)."""
    info: dict[str, Any] = {}
    if name == "hf":
        return measure(name, hf_runner(model_dir, args.max_tokens), args.batch_sizes, prompts, args.repeats), info
    if name == "transformers":
        from mcts_agent.llm.transformers_backend import TransformersBackend

        make: Callable[[], Any] = lambda: TransformersBackend(args.model)  # noqa: E731
        return measure(name, backend_runner(make, args.max_tokens), args.batch_sizes, prompts, args.repeats), info
    if name == "vllm":
        from mcts_agent.llm.vllm_backend import VLLMBackend

        return measure(name, backend_runner(lambda: VLLMBackend(args.model), args.max_tokens), args.batch_sizes,
                       prompts, args.repeats), info
    if name == "openai":
        from mcts_agent.llm.openai_backend import OpenAIBackend

        if args.openai_url:
            make = lambda: OpenAIBackend(None, base_url=args.openai_url, timeout=600, max_retries=0)  # noqa: E731
            return measure(name, backend_runner(make, args.max_tokens), args.batch_sizes, prompts, args.repeats), info
        log_path = Path(args.out).with_suffix(".vllm_serve.log")
        from mcts_agent.llm.vllm_server import serve

        with serve(model_dir, log_path=log_path, timeout=args.server_timeout) as server:
            info["server_start_seconds"] = round(server.start_seconds, 1)
            print(f"  vLLM server healthy after {server.start_seconds:.1f}s", flush=True)
            make = lambda: OpenAIBackend(None, base_url=server.base_url, timeout=600, max_retries=0)  # noqa: E731
            return measure(name, backend_runner(make, args.max_tokens), args.batch_sizes, prompts, args.repeats), info
    raise ValueError(f"unknown backend {name!r}; expected hf, transformers, vllm or openai")


def print_pivot(rows: list[dict[str, Any]], backends: Sequence[str], batch_sizes: Sequence[int]) -> None:
    """Tokens/s as a batch-size x backend table."""
    cell = {(r["backend"], r["batch_size"]): r["tokens_per_s"] for r in rows}
    names = [b for b in backends if any(r["backend"] == b for r in rows)]
    print_table("generated tokens/s (greedy)", [{"batch": bs, **{b: cell.get((b, bs)) for b in names}} for bs in batch_sizes])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", default="hf,transformers,vllm",
                   help="comma list of hf, transformers, vllm, openai (default: %(default)s)")
    p.add_argument("--batch-sizes", default="1,8,32,64", help="comma list of batch sizes (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens to generate per prompt (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=1, help="runs per batch size; the fastest is kept (default: %(default)s)")
    p.add_argument("--model", default=None, help="HF id or local dir; default: the embedded model")
    p.add_argument("--openai-url", default=None, help="use this OpenAI-compatible server instead of starting vllm serve")
    p.add_argument("--server-timeout", type=float, default=900.0, help="seconds to wait for vllm serve to be healthy")
    p.add_argument("--out", default="results/backend_throughput.json", help="JSON output path (default: %(default)s)")
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in args.backends if b not in ("hf", "transformers", "vllm", "openai")]
    if bad:
        p.error(f"--backends: unknown {bad}; expected some of hf, transformers, vllm, openai")
    try:
        args.batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    except ValueError:
        p.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        p.error(f"--batch-sizes must be positive integers, got {args.batch_sizes}")
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.max_tokens < 1:
        p.error(f"--max-tokens must be >= 1, got {args.max_tokens}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from mcts_agent.llm.model_store import resolve_model

    model_dir = resolve_model(args.model)
    prompts = make_prompts(max(args.batch_sizes))
    result: dict[str, Any] = {
        "benchmark": "backend_throughput",
        "config": {"backends": args.backends, "batch_sizes": args.batch_sizes, "max_tokens": args.max_tokens,
                   "repeats": args.repeats,
                   "model": args.model or "embedded", "model_dir": model_dir, "decoding": "greedy"},
        "machine": {**machine(), "platform": platform.platform(),
                    "env": {k: v for k, v in os.environ.items() if k.startswith(("VLLM_", "OMP_", "MKL_"))}},
        "results": [], "errors": {}, "info": {},
    }
    out = Path(args.out)
    for name in args.backends:
        print(f"[{name}]", flush=True)
        try:
            rows, info = run_backend(name, args, model_dir, prompts)
        except Exception as e:  # one backend failing must not lose the others' numbers
            result["errors"][name] = f"{type(e).__name__}: {e}"
            print(f"  {name} failed: {type(e).__name__}: {e}", flush=True)
            continue
        result["results"].extend(rows)
        if rows:
            info["load_seconds"] = rows[0]["load_seconds"]
        result["info"][name] = info
        atomic_write_json(out, result)  # partial results survive a later crash
    atomic_write_json(out, result)
    print_pivot(result["results"], args.backends, args.batch_sizes)
    for name, err in result["errors"].items():
        print(f"{name}: ERROR {err}")
    print(f"\nwrote {out}")
    return 1 if result["errors"] and not result["results"] else 0


if __name__ == "__main__":
    sys.exit(main())

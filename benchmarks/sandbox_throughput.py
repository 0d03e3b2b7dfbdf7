"""Sandbox throughput: isolated executions per second against bare ``python -c`` processes.

Runs the same N programs through (a) bare ``python -c`` subprocesses, (b) bare
``python -I -S -c``, (c) ``SandboxPool`` with each available backend (``bwrap`` = full
isolation, a new sandbox per run; ``bwrap-warm`` = the same isolation, each run forked from a
warm interpreter in a long-lived sandbox (``SandboxConfig.warm``); ``unshare``; ``none`` =
rlimits + driver only), all with the same interpreter
and the same number of worker threads, and reports executions/s and the isolation
overhead as a ratio (bare ``python -c`` executions/s divided by the mode's; also against
``python -I -S -c``, the flags the sandbox itself uses). Modes are
interleaved over ``--rounds`` rounds; the best and the median round are reported (the best
is the steadier figure on a shared machine). CPU time is not reported: processes inside a
pid namespace are not accounted to this process, so it would flatter the sandbox.

Workloads: ``trivial`` (an assert; measures pure per-run overhead) or ``humaneval`` (the
first N canonical solutions with their tests; realistic).

Run: ``python -m mcts_agent.benchmarks.sandbox_throughput --n 64 --workers 2 --out results/sandbox_throughput.json``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from mcts_agent.benchmarks.common import print_table, write_result
from mcts_agent.envs.code.pool import SandboxPool
from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError, Status

TRIVIAL = "assert sum(range(100)) == 4950\n"


def workload(name: str, n: int) -> list[tuple[str, str | None]]:
    """N (program, tests) pairs."""
    if name == "trivial":
        return [(TRIVIAL, None)] * n
    from mcts_agent.envs.code.humaneval import read_problems

    recs = read_problems()
    recs = (recs * (n // len(recs) + 1))[:n]
    return [(r["prompt"] + r["canonical_solution"], r["test"] + f"\ncheck({r['entry_point']})\n") for r in recs]


def measure(run_all: Callable[[], list[bool]]) -> tuple[float, int]:
    """(wall seconds, programs that passed) for one round."""
    t0 = time.perf_counter()
    ok = run_all()
    return time.perf_counter() - t0, sum(ok)


def bare(python: str, flags: Sequence[str], jobs: list[tuple[str, str | None]],
         workers: int) -> Callable[[], list[bool]]:
    def one(job: tuple[str, str | None]) -> bool:
        program, tests = job
        code = program + ("\n" + tests if tests else "")
        return subprocess.run([python, *flags, "-c", code], capture_output=True, timeout=60).returncode == 0

    def run_all() -> list[bool]:
        with ThreadPoolExecutor(workers) as ex:
            return list(ex.map(one, jobs))
    return run_all


def sandboxed(pool: SandboxPool, jobs: list[tuple[str, str | None]]) -> Callable[[], list[bool]]:
    def run_all() -> list[bool]:
        results = pool.run_many([p for p, _ in jobs], tests=[t for _, t in jobs], as_main=False)
        return [r.status is Status.PASSED for r in results]
    return run_all


def search_pass_at_1(n_tasks: int, simulations: int, branching: int, critic: str, seed: int = 0) -> list[dict]:
    """Greedy against MCTS pass@1 on the first ``n_tasks`` HumanEval tasks, embedded model,
    every candidate verified in the sandbox (one chosen answer per task)."""
    import tempfile

    from mcts_agent import envs
    from mcts_agent.critics import make_critic
    from mcts_agent.llm import load_backend
    from mcts_agent.runner import run_tasks
    from mcts_agent.search import SearchConfig

    tasks = envs.load_tasks("code/humaneval", limit=n_tasks)
    env = envs.make("code/humaneval")
    rows = []
    with load_backend("transformers", seed=seed) as backend, tempfile.TemporaryDirectory() as d:
        for algo in ("greedy", "mcts"):
            cfg = SearchConfig(algo=algo, simulations=simulations, branching=branching, max_step_tokens=256,
                               max_solution_tokens=256, answer_rule="q", max_trees_in_flight=n_tasks, seed=seed)
            s = run_tasks(tasks, env, backend, cfg, Path(d) / algo,
                          make_critic(critic, backend, env) if algo == "mcts" else None, env_id="code/humaneval")
            rows.append({"algo": algo, "tasks": s.tasks, "pass@1": round(s.accuracy, 3),
                         "ci95": [round(x, 3) for x in s.ci95], "tokens_per_task": round(s.tokens_per_task, 1),
                         "seconds": s.seconds})
    env.close()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=64, help="programs per mode (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="concurrent executions (default: %(default)s)")
    p.add_argument("--workload", choices=("trivial", "humaneval"), default="trivial")
    p.add_argument("--backends", default="bwrap,bwrap-warm,unshare,none",
                   help="sandbox backends to try (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per mode (default: %(default)s)")
    p.add_argument("--out", default="results/sandbox_throughput.json", help="JSON output (default: %(default)s)")
    p.add_argument("--search-tasks", type=int, default=0,
                   help="also compare greedy and MCTS pass@1 on this many HumanEval tasks with the embedded model")
    p.add_argument("--simulations", type=int, default=4, help="MCTS simulations for --search-tasks")
    p.add_argument("--branching", type=int, default=4, help="MCTS candidates per expansion for --search-tasks")
    p.add_argument("--critic", default="self-eval", help="MCTS critic for --search-tasks")
    args = p.parse_args(argv)
    if min(args.n, args.workers, args.rounds) < 1:
        p.error(f"--n, --workers and --rounds must be >= 1, got {args.n}, {args.workers}, {args.rounds}")

    jobs = workload(args.workload, args.n)
    base_cfg = SandboxConfig(timeout_s=30.0, require_isolation=False, allow_network=True)
    python = Sandbox(base_cfg.replace(isolation="none")).python  # the interpreter every mode uses
    modes: dict[str, Callable[[], list[bool]]] = {
        "bare python -c": bare(python, (), jobs, args.workers),
        "bare python -I -S -c": bare(python, ("-I", "-S"), jobs, args.workers)}
    pools, notes = [], {}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        isolation, _, variant = backend.partition("-")
        try:
            sandbox = Sandbox(base_cfg.replace(isolation=isolation, allow_network=isolation == "none",
                                               warm=variant == "warm"))
        except SandboxUnavailableError as e:
            notes[backend] = str(e)
            continue
        if variant == "warm" and not sandbox.warm:
            notes[backend] = "warm starts are not safe on this machine: " + sandbox.describe()
            continue
        pool = SandboxPool(sandbox, max_workers=args.workers)
        pool.run_many([TRIVIAL] * min(4, args.n))  # warm up the threads and the page cache
        pools.append(pool)
        modes[f"sandbox {backend}"] = sandboxed(pool, jobs)
    walls: dict[str, list[float]] = {m: [] for m in modes}
    passed: dict[str, int] = {}
    for _ in range(args.rounds):
        for mode, run_all in modes.items():
            wall, passed[mode] = measure(run_all)
            walls[mode].append(wall)
    for pool in pools:
        pool.close()
        pool.sandbox.close()
    rows = [{"mode": m, "n": args.n, "passed": passed[m], "best_exec_per_s": round(args.n / min(w), 2),
             "median_exec_per_s": round(args.n / statistics.median(w), 2)} for m, w in walls.items()]
    bare_best, isolated_best = rows[0]["best_exec_per_s"], rows[1]["best_exec_per_s"]
    for row in rows:
        row["overhead_x"] = round(bare_best / row["best_exec_per_s"], 2)
        row["overhead_vs_I_S_x"] = round(isolated_best / row["best_exec_per_s"], 2)
    search = search_pass_at_1(args.search_tasks, args.simulations, args.branching, args.critic) \
        if args.search_tasks > 0 else []
    write_result(args.out, "sandbox_throughput", {**vars(args), "python": python}, rows, unavailable=notes,
                 search=search)
    print_table(f"sandbox throughput ({args.workload}, n={args.n}, workers={args.workers}, rounds={args.rounds})",
                rows, ["mode", "passed", "best_exec_per_s", "median_exec_per_s", "overhead_x", "overhead_vs_I_S_x"])
    if search:
        print_table("HumanEval pass@1, embedded model (sandboxed verification)", search)
    for backend, why in notes.items():
        print(f"{backend}: unavailable: {why}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Scale benchmark: big trees on disk and in exports, and memory per node.

Export half: build one tree of ``--nodes`` nodes (random branching, realistic step texts and
token ids), then time ``to_json`` + write, load, GraphML export and viewer write, and measure
the memory a node costs beyond its step text (tracemalloc). Writes JSON (``--out``) and prints
a table. ``--browser`` also opens the viewer in headless chromium and reads back its load time.
Wall and CPU seconds are both reported: on a shared machine CPU seconds are the steadier figure.

Planner half: ``--trees`` MCTS trees in flight on the scripted backend (every round one
batched call over all of them): wall time, time per node, and peak memory per node beyond
its step text, env state and all (target <= 2 KB).

Run: ``python -m mcts_agent.benchmarks.scale --nodes 100000 --trees 1000 --out results/scale.json [--browser]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Sequence

from mcts_agent.benchmarks.common import machine, print_figures
from mcts_agent.tree import Tree

_OPENERS = ["First,", "Next,", "Then", "So", "Now", "We know that", "Therefore,", "This means", "Since", "Finally,"]
_SUBJECTS = ["Natalia", "the baker", "James", "the farm", "each box", "the train", "Maria", "the store"]
_VERBS = ["sold", "bought", "has", "earns", "uses", "needs", "gives away", "collects"]
_UNITS = ["clips", "apples", "dollars", "eggs", "pages", "miles", "cookies", "hours"]


def step_text(rng: random.Random) -> str:
    """A GSM8K-like reasoning step of roughly 40-200 characters."""
    parts = []
    for _ in range(rng.randint(1, 3)):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op, res = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
        parts.append(
            f"{rng.choice(_OPENERS)} {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {a} {rng.choice(_UNITS)}, "
            f"so {a} {op} {b} = {res}."
        )
    return " ".join(parts)


def build_tree(n_nodes: int, seed: int = 0, max_children: int = 5, token_ids: bool = True) -> Tree:
    """A tree of exactly ``n_nodes`` nodes grown like a search: random leaves get 1..k children."""
    rng = random.Random(seed)
    tree = Tree(tree_id=f"bench-{seed}", task_id="gsm8k/0", question="How many clips did Natalia sell?",
                algo="mcts", env_id="math")
    frontier = [0]
    while len(tree.nodes) < n_nodes:
        parent = frontier.pop(rng.randrange(len(frontier))) if len(frontier) > 1 else frontier.pop()
        for _ in range(min(rng.randint(1, max_children), n_nodes - len(tree.nodes))):
            text = step_text(rng)
            visits = rng.randint(0, 50)
            terminal = rng.random() < 0.1
            node = tree.add_child(
                parent, action=text,
                token_ids=[rng.randrange(49152) for _ in range(len(text) // 4)] if token_ids else [],
                logprob=-rng.random() * 20, prior=rng.random(), visits=visits,
                value_sum=visits * rng.random(), value=rng.random(), critic_scores={"self_eval": rng.random()},
                reward=float(rng.random() < 0.3) if terminal else None, terminal=terminal,
                answer=str(rng.randint(0, 200)) if terminal else None, finish_reason="stop",
                tokens=len(text) // 4, seconds=rng.random() * 0.01,
            )
            if not terminal:
                frontier.append(node.id)
        if not frontier:
            frontier.append(len(tree.nodes) - 1)
    terminals = tree.terminals()
    if terminals:
        best = max(terminals, key=lambda n: (n.depth, -n.id))  # a deep answer path shows more
        tree.answer_node, tree.answer = best.id, best.answer
    tree.meta["correct"] = True
    tree.stats.update(model_calls=len(tree.nodes) // 8, generated_tokens=sum(n.tokens for n in tree.nodes))
    return tree


def memory_per_node(n_nodes: int, seed: int = 0, token_ids: bool = True) -> dict[str, float]:
    """Bytes allocated per node while building a tree, minus the bytes of its step strings."""
    gc.collect()
    tracemalloc.start()
    tree = build_tree(n_nodes, seed=seed, token_ids=token_ids)
    gc.collect()
    total = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    text = sum(sys.getsizeof(n.action) for n in tree.nodes)
    tokens = sum(sys.getsizeof(n.token_ids) + sum(sys.getsizeof(t) for t in n.token_ids) for n in tree.nodes)
    return {
        "bytes_per_node_total": total / n_nodes,
        "bytes_per_node_beyond_text": (total - text) / n_nodes,
        "bytes_per_node_token_ids": tokens / n_nodes,
        "bytes_per_node_beyond_text_and_token_ids": (total - text - tokens) / n_nodes,
    }


def _timed(out: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; record wall seconds as ``<name>_s`` and this process's CPU seconds as ``<name>_cpu_s``.

    CPU time is the steadier figure on a shared machine; wall time includes waiting for the disk.
    """
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    out[f"{name}_s"], out[f"{name}_cpu_s"] = time.perf_counter() - w0, time.process_time() - c0
    return result


def browser_open_ms(page: Path, chromium: str) -> dict[str, Any]:
    """Open the viewer in headless chromium with ``?selftest=1``; the page reports its own timings."""
    import re
    import subprocess

    with tempfile.TemporaryDirectory() as profile:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
        dom = subprocess.run([chromium, *flags, f"--user-data-dir={profile}", "--dump-dom", page.as_uri() + "?selftest=1"],
                             capture_output=True, text=True, timeout=300).stdout
    m = re.search(r"<title>SELFTEST (PASS|FAIL) (.*?)</title>", dom)
    if not m:
        return {"viewer_selftest": "did not run"}
    r = json.loads(m.group(2).replace("&quot;", '"'))
    return {"viewer_selftest": m.group(1), "viewer_open_ms": r.get("ms_to_ready"), "viewer_expand_collapse_ms": r.get("ms_selftest")}


def bench_export(n_nodes: int = 100_000, seed: int = 0, workdir: Path | None = None,
                 chromium: str | None = None) -> dict[str, Any]:
    """Time save/load/GraphML/viewer for one ``n_nodes`` tree; return figures as a dict.

    With ``chromium`` (a browser path) the viewer is also opened headless and its load time read back.
    """
    from mcts_agent.export.graph import write_graphml
    from mcts_agent.export.viewer import write_viewer
    from mcts_agent.io import load_trees, save_trees

    out: dict[str, Any] = {"nodes": n_nodes}
    tree = _timed(out, "build", lambda: build_tree(n_nodes, seed=seed))
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        paths = {k: Path(d) / name for k, name in
                 {"jsonl": "trees.jsonl", "graphml": "tree.graphml", "html": "viewer.html"}.items()}
        _timed(out, "to_json", tree.to_json)
        _timed(out, "save", lambda: save_trees(paths["jsonl"], [tree]))
        loaded = _timed(out, "load", lambda: load_trees(paths["jsonl"]))
        assert loaded == [tree], "the tree did not round-trip"
        del loaded
        _timed(out, "graphml", lambda: write_graphml(tree, paths["graphml"]))
        _timed(out, "viewer", lambda: write_viewer([tree], paths["html"]))
        sizes = {k: p.stat().st_size for k, p in paths.items()}
        if chromium:
            out.update(browser_open_ms(paths["html"], chromium))
    del tree
    return {
        **out,
        "jsonl_bytes": sizes["jsonl"],
        "graphml_bytes": sizes["graphml"],
        "viewer_bytes": sizes["html"],
        **memory_per_node(n_nodes, seed=seed),
        "bytes_per_node_beyond_text_if_no_token_ids":
            memory_per_node(n_nodes, seed=seed, token_ids=False)["bytes_per_node_beyond_text"],
    }


def bench_planner(trees: int = 1000, simulations: int = 8, branching: int = 4, seed: int = 0) -> dict[str, Any]:
    """``trees`` MCTS trees in flight at once on the scripted backend (no model time).

    Every round is ONE generate call over all live trees; the figures are the planner's own
    cost: wall time, seconds per node, and peak traced memory per node beyond step texts.
    """
    from mcts_agent.critics import make_critic
    from mcts_agent.envs.base import Task
    from mcts_agent.envs.registry import make
    from mcts_agent.llm.scripted import ScriptedBackend
    from mcts_agent.search import Planner, SearchConfig

    rng = random.Random(seed)

    def script(prompt: str, i: int) -> str:
        depth = prompt.count("\n", prompt.rfind("assistant"))
        r = random.Random(hash((len(prompt), i, depth)) & 0xFFFF)
        if depth >= 3 and r.random() < 0.5:
            return f"The answer is {r.randint(1, 99)}.\n"
        return step_text(r) + "\n"

    tasks = [Task(id=f"s{i}", question=f"What is {rng.randint(1, 50)} + {rng.randint(1, 50)}?", answer="0")
             for i in range(trees)]
    env = make("math/gsm8k", max_steps=6)
    backend = ScriptedBackend(script)
    cfg = SearchConfig(simulations=simulations, branching=branching, max_trees_in_flight=trees, seed=seed)
    planner = Planner(backend, env, cfg, make_critic("none"))
    gc.collect()
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    done = planner.run(tasks)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    nodes = sum(len(t.nodes) for t in done)
    text = sum(sys.getsizeof(n.action) for t in done for n in t.nodes)
    return {
        "trees_in_flight": trees, "rounds": planner.stats.rounds, "nodes": nodes,
        "max_batch_rows": max(planner.stats.batch_sizes), "policy_calls": planner.stats.policy_calls,
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "us_per_node": round(1e6 * wall / nodes, 1),
        "peak_bytes_per_node_beyond_text": round((peak - text) / nodes),
    }


def _find_chromium() -> str | None:
    import shutil

    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100_000, help="nodes in the exported tree")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    ap.add_argument("--browser", action="store_true", help="also open the viewer in headless chromium and time it")
    ap.add_argument("--trees", type=int, default=1000, help="trees in flight in the planner half")
    args = ap.parse_args(argv)
    if args.nodes < 1:
        ap.error(f"--nodes must be >= 1, got {args.nodes}")
    result: dict[str, Any] = {
        "benchmark": "scale", "machine": machine(),
        "export": bench_export(args.nodes, seed=args.seed, chromium=_find_chromium() if args.browser else None),
    }
    result["planner"] = bench_planner(args.trees, seed=args.seed)
    print_figures(f"export of one {args.nodes:,}-node tree (seconds, bytes)", result["export"])
    print_figures(f"{args.trees:,} MCTS trees in flight, scripted backend (no model time)", result["planner"])
    if args.out:
        from mcts_agent.io import atomic_write_json

        atomic_write_json(args.out, result)
        print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()

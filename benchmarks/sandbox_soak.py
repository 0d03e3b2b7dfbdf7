"""Sandbox soak: many runs of a mixed, partly hostile workload leave nothing behind.

Cycles through ``PROGRAMS`` (passing, failing, timing out, forking a daemon, exhausting
memory, leaking pipes) ``--runs`` times, cold (a new sandbox per run) and warm (runs forked
from a zygote), half one by one and half through a two-worker ``SandboxPool``, and samples
every ``--every`` runs: processes on the host, zombies, this process's open file
descriptors, leftover run directories and leftover cgroups. The table reports the first
sample, the last and the largest growth over the first; all growth should be zero.

Run: ``python -m mcts_agent.benchmarks.sandbox_soak --runs 1000 --out results/sandbox_soak.json``.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mcts_agent.benchmarks.common import print_table, write_result
from mcts_agent.envs.code.pool import SandboxPool
from mcts_agent.envs.code.sandbox import Sandbox, SandboxConfig, Status

PROGRAMS = [  # (program, tests, expected status)
    ("def f(x):\n    return x + 1\n", "assert f(1) == 2\nassert f(2) == 3\n", Status.PASSED),
    ("def f(x):\n    return 0\n", "assert f(1) == 2\n", Status.FAILED),
    ("def f(x):\n    return x + 1\n", "for x in (1, 2):\n    assert f(x) == x + 1\n", Status.PASSED),
    ("import os, sys\nif os.fork() == 0:\n    os.setsid()\n    import time\n    time.sleep(60)\n", None,
     Status.PASSED),
    ("import time\ntime.sleep(60)\n", None, Status.TIMEOUT),
    ("raise ValueError('no')\n", None, Status.FAILED),
    ("import os\nos._exit(0)\n", None, Status.FAILED),
    ("x = [0] * (1 << 40)\n", None, Status.FAILED),
    ("import os\nfor i in range(8):\n    os.pipe()\nprint('x' * 100000)\n", None, Status.PASSED),
    ("def f():\n    while True:\n        pass\n", "assert f() == 1\n", Status.TIMEOUT),
]


def zombies_under(parents: set[int]) -> list[int]:
    """Zombie bwrap or sandbox-user (uid 65534) processes whose parent is in ``parents``."""
    out = []
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat_path, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        try:
            ours = b"(bwrap)" in stat or os.stat(stat_path).st_uid == 65534
        except OSError:
            continue
        if fields[0] == b"Z" and int(fields[1]) in parents and ours:
            out.append(int(stat_path.split("/")[2]))
    return out


def cgroup_dirs(pattern: str = "mcts-sandbox*") -> list[str]:
    return glob.glob(f"/sys/fs/cgroup/*/**/{pattern}", recursive=True)


def sample(work: Path) -> dict[str, int]:
    """What a leak would grow: host processes, zombies, our fds, run dirs, cgroups."""
    return {"processes": len(glob.glob("/proc/[0-9]*")), "zombies": len(zombies_under({1, os.getpid()})),
            "fds": len(os.listdir("/proc/self/fd")), "run_dirs": len(list(work.iterdir())),
            "cgroups": len(cgroup_dirs())}


def soak(runs: int, every: int, warm: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="mcts-soak-"))
    work.chmod(0o755)
    box = Sandbox(SandboxConfig(timeout_s=0.5, memory_mb=256, max_processes=16, scratch_mb=4,
                                work_dir=str(work), warm=warm))
    try:
        with SandboxPool(box, max_workers=2) as pool:
            pool.run_many(["pass", "pass"])  # first-use costs (probes, one zygote per worker) are not leaks
            samples, wrong, done = [sample(work)], 0, 0
            while done < runs:
                half = len(PROGRAMS) // 2
                results = [box.run(p, tests=t, as_main=t is None) for p, t, _ in PROGRAMS[:half]]
                results += pool.run_many([p for p, _, _ in PROGRAMS[half:]], tests=[t for _, t, _ in PROGRAMS[half:]])
                wrong += sum(r.status is not want for r, (_, _, want) in zip(results, PROGRAMS))
                done += len(PROGRAMS)
                if done % every < len(PROGRAMS):
                    samples.append(sample(work))
        samples.append(sample(work))
    finally:
        box.close()
        shutil.rmtree(work, ignore_errors=True)
    first, last = samples[0], samples[-1]
    row: dict[str, Any] = {"mode": "warm" if warm else "cold", "runs": done, "unexpected_status": wrong}
    for k in first:
        row[f"{k}_start"], row[f"{k}_end"] = first[k], last[k]
        row[f"{k}_max_growth"] = max(s[k] for s in samples) - first[k]
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000, help="runs per mode")
    ap.add_argument("--every", type=int, default=100, help="sample every this many runs")
    ap.add_argument("--out", default="results/sandbox_soak.json")
    a = ap.parse_args(argv)
    rows = [soak(a.runs, a.every, warm) for warm in (False, True)]
    print_table(f"sandbox soak ({a.runs} runs per mode)", rows,
                ["mode", "runs", "unexpected_status", "processes_start", "processes_max_growth", "zombies_max_growth",
                 "fds_max_growth", "run_dirs_max_growth", "cgroups_max_growth"])
    doc = write_result(a.out, "sandbox_soak", vars(a), rows)
    print(f"wrote {a.out}")
    return doc


if __name__ == "__main__":
    main()

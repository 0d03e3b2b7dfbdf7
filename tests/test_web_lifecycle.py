"""Every browser, driver and page server is stopped: on close(), on an exception, on SIGTERM and on Ctrl-C.

Processes are followed by the PIDs the env started (chromedriver, chromium and its helpers),
checked against ``pgrep`` before and after; a zombie counts as stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mcts_agent.envs.web import browser as browser_mod
from mcts_agent.envs.web.browser import browser_available
from mcts_agent.envs.web.miniwob import MiniWoBEnv
from mcts_agent.lifecycle import pid_alive

REASON = browser_available()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(REASON is not None, reason=str(REASON))]
ROOT = Path(__file__).resolve().parents[1]


def pgrep() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "chromium|chromedriver"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split() if pid_alive(int(p))}


def env_pids(env: MiniWoBEnv) -> list[int]:
    return [pid for slot in env.pool._slots if slot.instance.browser for pid in slot.instance.browser.pids()]


def names(pids: list[int]) -> set[str]:
    return {Path(f"/proc/{p}/comm").read_text().strip() for p in pids if pid_alive(p)}


def test_close_and_an_exception_inside_with_stop_every_process() -> None:
    before = pgrep()
    env = MiniWoBEnv(task=["click-button", "enter-text"], seeds=1, pool_size=2)
    env.pool.start(("click-button", 0))
    env.pool.start(("enter-text", 0))  # another task while the pool has room: a second browser
    pids = env_pids(env)
    assert len(env.pool._slots) == 2 and {"chromedriver", "chromium"} <= names(pids)
    assert set(pids) <= pgrep() - before
    env.close()
    assert not any(pid_alive(p) for p in pids) and not (pgrep() & set(pids))
    assert not browser_mod.LIVE  # nothing left for atexit either

    with pytest.raises(RuntimeError, match="boom"):
        with MiniWoBEnv(task="click-button", seeds=1, pool_size=1) as env2:
            env2.reset(seed=0)
            env2.step("click(1)")
            pids = env_pids(env2)
            assert pids
            raise RuntimeError("boom")
    assert not any(pid_alive(p) for p in pids) and not browser_mod.LIVE


CHILD = textwrap.dedent("""
    import json, sys, time
    from mcts_agent.envs.web.miniwob import MiniWoBEnv
    env = MiniWoBEnv(task="login-user", seeds=1, pool_size=1)
    from concurrent.futures import ThreadPoolExecutor
    env.reset(seed=0)
    ThreadPoolExecutor(1).submit(env.step, 'click(1)').result()  # the browser starts in a worker thread
    page = env.pool._slots[0].instance
    print(json.dumps({"pids": page.browser.pids(), "url": page.base_url}), flush=True)
    time.sleep(120)  # killed here, with a live browser and server (no close() is ever called)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_a_running_process_stops_its_browsers(sig: signal.Signals) -> None:
    before = pgrep()
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            # Ctrl-C semantics even when this run was started in the background, where
                            # the shell ignores SIGINT and children would inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-2000:]
        pids = json.loads(line)["pids"]
        assert len(pids) >= 2 and set(pids) <= pgrep() - before
        proc.send_signal(sig)  # SIGINT: what Ctrl-C sends (KeyboardInterrupt, then exit handlers)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -sig, proc.stderr.read()[-2000:]  # Python exits on KeyboardInterrupt by SIGINT too
    assert not any(pid_alive(p) for p in pids) and not (pgrep() & set(pids))

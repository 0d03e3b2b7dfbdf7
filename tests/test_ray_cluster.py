"""A real two-node Ray cluster on 127.0.0.1 (``ray start --head`` + ``ray start --address``):
a search whose env worker is killed with kill -9 mid-run finishes with every task once.

Every process gets the same token authentication (RAY_AUTH_MODE=token and one random
RAY_AUTH_TOKEN; a node with another token fails with InvalidAuthToken), usage stats off,
no dashboard, free ports and a private temp dir. The fixture stops its own processes by pid
(``ray stop`` would stop every Ray process on the machine) and removes the temp dir with
its ``ray_current_cluster`` record, which would otherwise send a later ``ray.init`` to a dead cluster.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.ray
RAY = str(Path(sys.executable).with_name("ray"))


def kill_processes_under(temp: str) -> None:
    """Kill every process whose command line names ``temp`` (a cluster's private temp dir)."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp in arg for arg in proc.info["cmdline"] or ()):
                proc.kill()
        except psutil.Error:
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    address: str
    env: dict[str, str]  # what every process of this cluster runs with
    head: subprocess.Popen
    node: subprocess.Popen
    temp: str


def _node_args(temp: str) -> list[str]:
    return ["--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--num-cpus=2", "--disable-usage-stats",
            f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]


def _stop(cluster_procs: list[subprocess.Popen], temp: str) -> None:
    """SIGTERM to our ``ray start --block`` processes (each stops what it started), then SIGKILL by pid
    for anything of this cluster still alive, then the temp dir and its cluster record."""
    for p in cluster_procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in cluster_procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
    kill_processes_under(temp)
    with_record = Path(temp) / "ray_current_cluster"
    with_record.unlink(missing_ok=True)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    temp = f"/tmp/ray-{secrets.token_hex(4)}"  # short: unix socket paths are limited to 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    procs: list[subprocess.Popen] = []
    try:
        head = subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
                                 *_node_args(temp)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        procs.append(head)
        deadline = time.monotonic() + 60
        while not (Path(temp) / "ray_current_cluster").exists():
            assert head.poll() is None and time.monotonic() < deadline, "the head node did not start"
            time.sleep(0.2)
        node = subprocess.Popen([RAY, "start", f"--address=127.0.0.1:{port}", *_node_args(temp)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(node)
        yield Cluster(f"127.0.0.1:{port}", env, head, node, temp)
    finally:
        _stop(procs, temp)
    assert not (Path(temp) / "ray_current_cluster").exists()


DRIVER = """
import json, sys, time
import ray
from mcts_agent.envs.demo import CounterEnv
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.ray_executor import ray_session
from mcts_agent.runner import run_tasks
from mcts_agent.search import SearchConfig

address, out = sys.argv[1], sys.argv[2]
env = CounterEnv(n=8, delay=0.3, max_steps=4)
cfg = SearchConfig(algo="mcts", simulations=3, branching=2, max_trees_in_flight=2, env_workers=4, ray=address,
                   ray_resources="CPU=0.5", ray_retries=2)
with ray_session(address):
    deadline = time.monotonic() + 60
    while sum(n["Alive"] for n in ray.nodes()) < 2:  # the second node joins
        assert time.monotonic() < deadline, "the second node did not join"
        time.sleep(0.2)
    s = run_tasks(env.tasks, env, ScriptedBackend(lambda prompt, i: f"add({i % 9 + 1})"), cfg, out, env_id="demo/counter")
print(json.dumps({"tasks": s.tasks}))
"""


def env_workers(root: subprocess.Popen) -> list[tuple[psutil.Process, str]]:
    """``(process, title)`` of the EnvWorker actors under one ``ray start`` process (one node);
    the title is ``ray::EnvWorker.run`` while the actor is inside a step."""
    out = []
    for child in psutil.Process(root.pid).children(recursive=True):
        try:
            title = (child.cmdline() or [""])[0]
        except psutil.Error:
            continue
        if title.startswith("ray::EnvWorker"):
            out.append((child, title))
    return out


def test_kill_9_of_an_env_worker_mid_run_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    from mcts_agent.envs.demo import CounterEnv
    from mcts_agent.io import load_trees
    from mcts_agent.llm.scripted import ScriptedBackend
    from mcts_agent.search import SearchConfig, run_search

    out = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, cluster.address, str(out)], env=cluster.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        results = out / "results.jsonl"
        deadline = time.monotonic() + 120
        victim = None
        while victim is None:
            assert driver.poll() is None, driver.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no env worker on the second node was seen stepping"
            running = [p for p, title in env_workers(cluster.node) if title == "ray::EnvWorker.run"]
            if running and results.exists() and results.read_text().count("\n") >= 1:
                victim = running[0]
            else:
                time.sleep(0.02)
        assert env_workers(cluster.head), "SPREAD puts env workers on both nodes"
        written = results.read_bytes()
        trees_written = (out / "trees.jsonl").read_bytes()
        victim.send_signal(signal.SIGKILL)  # mid-step, on the second node
        stdout, stderr = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == 0, stderr[-3000:]
    assert written.count(b"\n") < 8, "killed after the last task: not mid-run"
    assert "died (" in stderr and "retrying its step" in stderr  # the killed worker's step was resubmitted
    assert json.loads(stdout.strip().splitlines()[-1]) == {"tasks": 8}
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    tasks = CounterEnv(n=8).tasks
    assert sorted(r["task_id"] for r in rows) == sorted(t.id for t in tasks)  # every task exactly once
    assert results.read_bytes().startswith(written) and (out / "trees.jsonl").read_bytes().startswith(trees_written)
    if victim.is_running():  # gone, or at most a zombie its raylet has not reaped yet
        assert victim.status() == psutil.STATUS_ZOMBIE
    deadline = time.monotonic() + 20
    while env_workers(cluster.head) + env_workers(cluster.node):  # the driver stopped its actors on exit
        assert time.monotonic() < deadline, "env worker actors outlived their driver"
        time.sleep(0.2)

    reference = run_search(tasks, CounterEnv(n=8, max_steps=4), ScriptedBackend(lambda p, i: f"add({i % 9 + 1})"),
                           SearchConfig(algo="mcts", simulations=3, branching=2, max_trees_in_flight=2))
    got = {t.task_id: [(n.action, n.observation) for n in t.nodes] for t in load_trees(out / "trees.jsonl")}
    assert got == {t.task_id: [(n.action, n.observation) for n in t.nodes] for t in reference}


def test_a_driver_with_another_token_is_refused_in_one_line(cluster: Cluster, tmp_path: Path) -> None:
    env = {**cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_gcs_server_port_wait_time_s": "3"}
    code = ("import sys; from mcts_agent.ray_executor import ray_session\n"
            "from mcts_agent.errors import ConfigError\n"
            "try:\n    ray_session(sys.argv[1]).__enter__()\n"
            "except ConfigError as e:\n    print(e, file=sys.stderr); sys.exit(2)\n")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code, cluster.address], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"cannot connect to the Ray cluster '{cluster.address}'"), line
    assert "authentication failed (InvalidAuthToken): every process of a cluster needs the same RAY_AUTH_MODE" in line
    assert time.monotonic() - t0 < 60


class _FakeOpenAI:
    """The least of an OpenAI-compatible server: models, tokenize, completions writing ``add(k)``."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply({"object": "list", "data": [{"id": "m", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if self.path.endswith("/tokenize"):
                    return self._reply({"tokens": [ord(c) for c in str(body.get("prompt", ""))]})
                choices = []
                for k in range(int(body.get("n", 1))):
                    text = f"add({k % 9 + 1})"
                    choices.append({"index": k, "text": text, "finish_reason": "stop", "token_ids": [ord(c) for c in text],
                                    "logprobs": {"tokens": list(text), "token_logprobs": [-0.1 * (k + 1)] * len(text)}})
                self._reply({"choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": 6 * len(choices)}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_cli_search_with_ray_local_env_workers_and_a_policy_replica(tmp_path: Path) -> None:
    """``mcts-agent search --ray local``: a private local cluster, env actors, the policy in a Ray actor
    (the openai backend against a stub server), output as without Ray; the cluster stops with the command."""
    temp = f"/tmp/rt-{secrets.token_hex(4)}"
    server = _FakeOpenAI()
    env = {**os.environ, "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "run"
    try:
        done = subprocess.run([sys.executable, "-m", "mcts_agent.cli.main", "--quiet", "search", "--env", "demo/counter",
                               "--limit", "3", "--algo", "mcts", "--critic", "none", "--simulations", "2",
                               "--branching", "2", "--max-steps", "3", "--no-viewer", "--backend", "openai",
                               "--model", "m", "--base-url", server.url, "--ray", "local", "--env-workers", "1",
                               "--replicas", "1", "--replica-resources", "CPU=0.5",
                               "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        rows = [json.loads(x) for x in (out / "mcts" / "results.jsonl").read_text().splitlines()]
        assert len(rows) == 3 and len({r["task_id"] for r in rows}) == 3
        settings = json.loads((out / "mcts" / "run.json").read_text())["settings"]
        assert "ray" not in settings and "env_executor" not in settings  # runtime fields: not part of the trees
        left = [p for p in psutil.process_iter(["cmdline"]) if any(temp in a for a in p.info["cmdline"] or ())]
        assert not left, [p.info["cmdline"][:1] for p in left]  # the local cluster stopped with the command
    finally:
        server.close()
        kill_processes_under(temp)
        shutil.rmtree(temp, ignore_errors=True)

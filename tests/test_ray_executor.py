"""The Ray executor and Ray policy replicas on an in-process local Ray (one per module), plus the
config, CLI and iterate wiring of ``--ray`` and the error without Ray installed."""

from __future__ import annotations

import os
import pickle
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from mcts_agent.errors import ConfigError, EnvError
from mcts_agent.executor import SKIPPED, SerialExecutor, make_executor
from mcts_agent.ray_executor import RayExecutor, _stale, env_bytes, parse_resources
from mcts_agent.search import Planner, SearchConfig

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A private local Ray for this module: 4 CPUs, 2 'browser' slots, no dashboard, no auth, own temp dir."""
    from ray import cloudpickle

    temp = f"/tmp/ray-{secrets.token_hex(4)}"  # short: unix socket paths are limited to 107 bytes
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
        ray.init(address="local", num_cpus=4, resources={"browser": 2}, include_dashboard=False, _temp_dir=temp,
                 log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()
            cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
            shutil.rmtree(temp, ignore_errors=True)


# ----- step functions (module level: they travel to the workers) --------------------------
def double(env: dict, item: int) -> tuple[int, int]:
    return item * env["k"], os.getpid()


def nap(env: dict, item: float) -> float:
    time.sleep(item)
    return item


def fail_on_three(env: Any, item: int) -> int:
    if item == 3:
        raise ValueError("three is not allowed")
    return item


def die(env: Any, item: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return item


def counter_script(prompt: str, i: int) -> str:
    return f"add({i % 9 + 1})"


# ----- the executor -----------------------------------------------------------------------
def test_results_come_back_in_order_from_separate_workers(local_ray: None) -> None:
    with RayExecutor(3, resources="CPU=1") as ex:
        out = ex.map(double, {"k": 3}, list(range(10)))
        assert [v for v, _ in out] == [3 * i for i in range(10)]
        pids = {pid for _, pid in out}
        assert os.getpid() not in pids and pids <= {pid for pid, _ in ex.worker_pids()}
        assert len(ex.worker_pids()) == 3 and ex.map(double, {"k": 3}, []) == []


def test_a_failing_step_raises_its_own_exception_and_the_pool_goes_on(local_ray: None) -> None:
    with RayExecutor(2) as ex:
        with pytest.raises(ValueError, match="three is not allowed"):
            ex.map(fail_on_three, None, [1, 2, 3, 4])
        assert ex.map(fail_on_three, None, [1, 2]) == [1, 2] and ex.restarts == 0


def test_items_whose_deadline_passed_before_they_started_are_skipped(local_ray: None) -> None:
    with RayExecutor(1) as ex:
        ex.map(nap, None, [0.0])  # workers up
        soon = time.perf_counter() + 0.2
        assert ex.map(nap, None, [0.5, 0.0, 0.0], [None, soon, None]) == [0.5, SKIPPED, 0.0]


def test_a_worker_killed_mid_step_is_restarted_and_its_step_retried(local_ray: None) -> None:
    with RayExecutor(2, retries=2) as ex:
        ex.map(nap, None, [0.0, 0.0])
        before = [pid for pid, _ in ex.worker_pids()]
        result: list[Any] = []
        runner = threading.Thread(target=lambda: result.append(ex.map(nap, None, [1.0, 1.0, 0.1])))
        runner.start()
        time.sleep(0.4)  # both workers are inside a 1 s step
        os.kill(before[0], signal.SIGKILL)
        runner.join(60)
        assert result == [[1.0, 1.0, 0.1]] and ex.restarts == 1
        after = [pid for pid, _ in ex.worker_pids()]
        assert before[0] not in after and before[1] in after and len(after) == 2


def test_retries_after_worker_deaths_are_bounded(local_ray: None) -> None:
    with RayExecutor(1, retries=1) as ex:
        with pytest.raises(EnvError, match=r"env step 0 of this round lost its Ray worker 2 times \(retries=1\)"):
            ex.map(die, None, [0])


def test_resources_are_requested_and_checked_up_front(local_ray: None) -> None:
    with RayExecutor(2, resources="CPU=0.5,browser=1") as ex:  # the cluster has 2 browser slots
        assert [v for v, _ in ex.map(double, {"k": 1}, [1, 2])] == [1, 2]
    with RayExecutor(3, resources="CPU=0.5,browser=1") as ex:
        with pytest.raises(ConfigError, match=r"3 Ray env workers need browser=3 in all \(browser=1 each\), "
                                              r"but the cluster has browser=2 free \(2 in all\); lower env_workers or ray_resources"):
            ex.map(double, {"k": 1}, [1])
    with pytest.raises(ConfigError, match=r"need GPU=1 in all .* the cluster has GPU=0 free \(0 in all\)"):
        RayExecutor(1, resources="GPU=1").map(double, {"k": 1}, [1])


def test_search_on_ray_workers_gives_the_serial_trees(local_ray: None) -> None:
    from mcts_agent.envs.demo import CounterEnv
    from mcts_agent.llm.scripted import ScriptedBackend

    env = CounterEnv(n=3, max_steps=4)
    cfg = SearchConfig(algo="mcts", simulations=3, branching=2, max_trees_in_flight=3)
    serial = Planner(ScriptedBackend(counter_script), env, cfg, executor=SerialExecutor()).run(env.tasks)
    with RayExecutor(2, resources="CPU=0.5") as ex:
        planner = Planner(ScriptedBackend(counter_script), env, cfg, executor=ex)
        trees = planner.run(env.tasks)
    assert [[(n.action, n.observation) for n in t.nodes] for t in trees] == \
        [[(n.action, n.observation) for n in t.nodes] for t in serial]
    assert planner.stats.env_steps > 0


def test_planner_runs_env_steps_where_the_config_says(local_ray: None) -> None:
    """Needs the Planner to pass ``config.executor_options()`` to ``make_executor``."""
    from mcts_agent.envs.demo import CounterEnv
    from mcts_agent.llm.scripted import ScriptedBackend

    cfg = SearchConfig(ray="auto", env_workers=2, ray_resources="CPU=0.5,browser=1", ray_retries=1)
    planner = Planner(ScriptedBackend(counter_script), CounterEnv(n=1), cfg)
    assert isinstance(planner.executor, RayExecutor)
    assert (planner.executor.workers, planner.executor.resources, planner.executor.retries) == \
        (2, {"CPU": 0.5, "browser": 1.0}, 1)
    planner.executor.close()


# ----- envs travel; configuration -----------------------------------------------------------
def test_an_env_with_locks_travels_and_one_with_threads_is_refused(tmp_path: Path) -> None:
    from mcts_agent import envs

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "mbpp" / "mbpp.jsonl"
    if not data.exists():
        pytest.skip(f"MBPP data not found at {data}")
    code = envs.make("code/mbpp", data=str(data), limit=2)
    copy = pickle.loads(env_bytes(code))
    assert [t.id for t in copy.tasks] == [t.id for t in code.tasks] and copy._pool_lock is not code._pool_lock
    holder = {"thread": threading.Thread(target=print)}
    with pytest.raises(EnvError, match="the env dict cannot be sent to Ray workers: .*make it picklable"):
        env_bytes(holder)


def test_resource_specs_and_ray_config_fields_are_validated() -> None:
    assert parse_resources("CPU=1, GPU=0.5,browser=2") == {"CPU": 1.0, "GPU": 0.5, "browser": 2.0}
    assert parse_resources({"GPU": 1}) == {"GPU": 1.0} and parse_resources("") == {}
    with pytest.raises(ConfigError, match=r"Ray resources 'CPU': expected NAME=AMOUNT pairs .* got 'CPU'"):
        parse_resources("CPU")
    with pytest.raises(ConfigError, match=r"Ray resources 'GPU=-1': GPU must be a number >= 0, got '-1'"):
        parse_resources("GPU=-1")
    cfg = SearchConfig(ray="10.0.0.1:6379", ray_resources="CPU=2")
    assert cfg.env_executor == "ray" and SearchConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.executor_options() == {"address": "10.0.0.1:6379", "resources": "CPU=2", "retries": 3}
    assert SearchConfig().executor_options() == {} and SearchConfig(env_executor="ray").ray is None
    assert {"ray", "ray_resources", "ray_retries"} <= set(SearchConfig.RUNTIME_FIELDS)
    with pytest.raises(ConfigError, match=r"SearchConfig.ray='local' runs env steps on Ray actors, but env_executor "
                                          r"is 'process'; leave env_executor at its default or set it to 'ray'"):
        SearchConfig(ray="local", env_executor="process")
    with pytest.raises(ConfigError, match=r"SearchConfig.ray_retries must be an integer >= 0, got -1"):
        SearchConfig(ray_retries=-1)
    with pytest.raises(ConfigError, match=r"SearchConfig.ray_resources: Ray resources 'CPU=x': CPU must be"):
        SearchConfig(ray_resources="CPU=x")
    with pytest.raises(ConfigError, match=r"SearchConfig.ray must be a cluster address, 'auto' or 'local', got ' '"):
        SearchConfig(ray=" ")
    ex = make_executor("ray", 2, resources="CPU=0.5", retries=1)
    assert isinstance(ex, RayExecutor) and (ex.workers, ex.resources, ex.retries) == (2, {"CPU": 0.5}, 1)
    with pytest.raises(ConfigError, match=r"env executor 'thread' takes no options, got \['address'\]"):
        make_executor("thread", 2, address="x")


def test_a_stale_cluster_record_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    record = tmp_path / "ray_current_cluster"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        record.write_text(f"127.0.0.1:{s.getsockname()[1]}")
        assert not _stale(str(record)) and record.exists()
    assert _stale(str(record)) and not record.exists()  # nothing listens there any more


def test_iterate_searches_run_where_the_training_search_runs(tmp_path: Path) -> None:
    from mcts_agent.training.iterate import IterateRun
    from mcts_agent.training.iterate_config import IterateConfig

    cfg = IterateConfig(out_dir=str(tmp_path), search={"algo": "mcts", "ray": "10.0.0.1:6379", "env_workers": 4},
                        eval_algos=["mcts"])
    run = IterateRun(cfg)
    held_out = run._where_search_runs(cfg.eval_config("mcts"))
    assert (held_out.env_executor, held_out.ray, held_out.env_workers) == ("ray", "10.0.0.1:6379", 4)
    run._check_config()
    moved = IterateConfig(out_dir=str(tmp_path), search={"algo": "mcts", "ray": "10.0.0.2:6379"}, eval_algos=["mcts"])
    IterateRun(moved)._check_config()  # another cluster, same run
    changed = IterateConfig(out_dir=str(tmp_path), search={"algo": "mcts", "simulations": 3}, eval_algos=["mcts"])
    with pytest.raises(ConfigError, match=r"differs in \['search'\]"):
        IterateRun(changed)._check_config()


# ----- CLI ------------------------------------------------------------------------------
def test_cli_ray_options_reach_the_search(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from mcts_agent.cli import search_run
    from mcts_agent.cli.main import app

    jobs: list = []
    monkeypatch.setattr(search_run, "run_job", jobs.append)
    args = ["search", "--env", "demo/counter", "--ray", "127.0.0.1:6379", "--ray-resources", "CPU=2,browser=1",
            "--env-workers", "4", "--replicas", "2", "--replica-resources", "GPU=1"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cfg = SearchConfig.from_dict(jobs[0].search)
    assert (cfg.env_executor, cfg.ray, cfg.ray_resources, cfg.env_workers) == ("ray", "127.0.0.1:6379",
                                                                                "CPU=2,browser=1", 4)
    assert (jobs[0].policy.replicas, jobs[0].policy.replica_resources) == (2, "GPU=1")
    help_text = CliRunner().invoke(app, ["search", "--help"], env={"COLUMNS": "250"}).output
    assert "--ray " in help_text and "--ray-resources" in help_text and "--replicas" in help_text


def test_without_ray_installed_ray_is_one_clear_error(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['ray'] = None; import mcts_agent.search, mcts_agent.cli.main as m; "
            "sys.argv = ['mcts-agent', '--quiet'] + sys.argv[1:]; m.main()")
    out = subprocess.run([sys.executable, "-c", code, "search", "--env", "demo/counter", "--ray", "local",
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "Ray is not installed; install it with: pip install 'mcts-agent[ray]'" in out.stderr
    assert not (tmp_path / "run").exists()


# ----- policy replicas ---------------------------------------------------------------------
def test_policy_replicas_split_a_batch_and_keep_its_order(local_ray: None) -> None:
    from mcts_agent.llm.ray_backend import RayBackend
    from mcts_agent.llm.scripted import ScriptedBackend
    from mcts_agent.llm.types import GenerationRequest

    def make() -> ScriptedBackend:
        return ScriptedBackend(lambda prompt, i: f"{prompt[::-1]}#{i}")

    requests = [GenerationRequest(prompt=f"p{j}", n=1 + j % 3, max_tokens=8) for j in range(7)]
    local = make()
    with RayBackend(make, replicas=2, resources="CPU=0.5") as remote:
        assert remote.name == "ray[scripted]" and len({r["pid"] for r in remote.replica_info}) == 2
        got = remote.generate(requests)
        assert [[c.text for c in cs] for cs in got] == [[c.text for c in cs] for cs in local.generate(requests)]
        assert remote.score(["a", "b", "c"], ["x", "yy", "zzz"]) == local.score(["a", "b", "c"], ["x", "yy", "zzz"])
        assert remote.next_token_logprobs(["a", "b"], ["Yes", "No"]) == local.next_token_logprobs(["a", "b"], ["Yes", "No"])
        assert remote.format_chat([{"role": "user", "content": "hi"}]) == local.format_chat([{"role": "user", "content": "hi"}])
        assert (remote.stats.calls, remote.stats.prompts, remote.stats.generated_tokens, remote.stats.prompt_tokens) == \
            (1, 7, local.stats.generated_tokens, local.stats.prompt_tokens)
        os.kill(remote.replica_info[1]["pid"], signal.SIGKILL)  # Ray restarts it; the next batch still comes back
        again = remote.generate(requests)
        assert [[c.text for c in cs] for cs in again] == [[c.text for c in cs] for cs in got]
        replicas = list(remote._replicas)
    deadline = time.monotonic() + 30
    with pytest.raises(ray.exceptions.RayActorError):  # closed: the actors are gone (ray.kill is asynchronous)
        while time.monotonic() < deadline:
            ray.get([r.info.remote() for r in replicas], timeout=10)
            time.sleep(0.2)


@pytest.mark.model
def test_iterate_serves_a_phase_from_ray_replicas_with_the_in_process_result(local_ray: None, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``"backend": {"replicas": 1}`` in an iterate config: the evaluation phase's model runs in a Ray
    actor (the embedded model, loaded there) and writes the trees the in-process backend writes."""
    from mcts_agent.io import load_trees
    from mcts_agent.llm import ray_backend
    from mcts_agent.training.iterate import IterateRun
    from mcts_agent.training.iterate_config import IterateConfig
    from tests.test_iterate import TINY

    started: list[int] = []
    original = ray_backend.RayBackend.__init__

    def spy(self, spec, replicas=1, **kwargs):  # type: ignore[no-untyped-def]
        started.append(replicas)
        original(self, spec, replicas, **kwargs)

    monkeypatch.setattr(ray_backend.RayBackend, "__init__", spy)
    base = {**TINY, "eval_tasks": 2}
    remote = IterateConfig(**base, out_dir=str(tmp_path / "ray"),
                           backend={"backend": "transformers", "replicas": 1, "replica_resources": "CPU=0.5"})
    local = IterateConfig(**base, out_dir=str(tmp_path / "local"))
    assert remote.uses_ray() and not local.uses_ray()
    got = IterateRun(remote).evaluate(0, tmp_path / "ray" / "eval")
    assert started == [1]
    want = IterateRun(local).evaluate(0, tmp_path / "local" / "eval")
    assert got == want

    def texts(root: Path) -> list[list[str]]:
        return [[n.action for n in t.nodes] for t in load_trees(root / "eval" / "greedy" / "trees.jsonl")]

    assert texts(tmp_path / "ray") == texts(tmp_path / "local")


def _browser_pids(owner: int) -> list[int]:
    """Live chromedriver and chromium processes of the browsers process ``owner`` started."""
    import tempfile

    from mcts_agent.envs.web import browser as web

    pids = []
    for folder in Path(tempfile.gettempdir()).glob(f"{web.PROFILE_PREFIX}{owner}-*"):
        pgid = int((folder / web.OWNER_FILE).read_text()) if (folder / web.OWNER_FILE).exists() else None
        pids += web._matching_pids(pgid, str(folder))
    return pids


@pytest.mark.browser
def test_miniwob_browsers_run_on_ray_actors_and_a_killed_actor_leaves_none(local_ray: None) -> None:
    """A MiniWoB env travels to Ray actors (each starts its own browsers and page server), the
    oracle's trees equal the in-process ones, the browsers of an actor killed with -9 are swept by
    the next browser started, and closing the executor stops every browser of every actor."""
    from mcts_agent.envs.web.browser import browser_available
    from mcts_agent.envs.web.miniwob import MiniWoBEnv
    from mcts_agent.envs.web.oracle import oracle_script
    from mcts_agent.lifecycle import pid_alive
    from mcts_agent.llm.scripted import ScriptedBackend

    if browser_available() is not None:
        pytest.skip(str(browser_available()))
    env = MiniWoBEnv(task=["click-button", "enter-text"], seeds=1, pool_size=1, max_steps=6)
    try:
        cfg = SearchConfig(algo="greedy", max_step_tokens=200, max_trees_in_flight=2)
        script = oracle_script(env.tasks)
        local = Planner(ScriptedBackend(script), env, cfg, executor=SerialExecutor()).run(env.tasks)
        with RayExecutor(2, resources="CPU=0.5,browser=1", retries=2) as ex:
            trees = Planner(ScriptedBackend(script), env, cfg, executor=ex).run(env.tasks)
            assert [[(n.action, n.observation) for n in t.nodes] for t in trees] == \
                [[(n.action, n.observation) for n in t.nodes] for t in local]
            assert all(env.verify_state(t.nodes[t.answer_node].state, task) for t, task in zip(trees, env.tasks))
            actors = [pid for pid, _ in ex.worker_pids()]
            assert all(_browser_pids(a) for a in actors)  # each actor drove browsers of its own
            orphans = _browser_pids(actors[0])
            os.kill(actors[0], signal.SIGKILL)  # no close() runs: its browsers are orphans now
            again = Planner(ScriptedBackend(script), env, cfg, executor=ex).run(env.tasks)
            assert [[n.action for n in t.nodes] for t in again] == [[n.action for n in t.nodes] for t in local]
            assert ex.restarts >= 1 or actors[0] not in [pid for pid, _ in ex.worker_pids()]
            alive_now = [p for p in orphans if pid_alive(p)]
            assert not alive_now, alive_now  # swept when the restarted actor started its browser
        assert not any(_browser_pids(a) for a in actors)
    finally:
        env.close()


# ----- rollouts on Ray actors ---------------------------------------------------------------
def rollout_script(prompt: str, i: int) -> str:
    """A policy step is the first line ('x = 1' / 'x = 2'); a rollout (no stop) runs on to an answer,
    right after an even number of steps and wrong after an odd one."""
    return f"x = {i + 1}\ny = 2 + 3\nAnswer: {5 if prompt.count('x = ') % 2 else 7}"


def driverless_env(driver_pid: int):  # type: ignore[no-untyped-def]
    """A one-step-per-line env (``Answer: X`` ends it) that refuses to step in the process ``driver_pid``."""
    from mcts_agent.envs.base import Task, TextEnv

    class Driverless(TextEnv):
        def messages(self, task: Task) -> list[dict[str, str]]:
            return [{"role": "user", "content": task.question}]

        def extract_answer(self, step: str) -> str | None:
            return step[len("Answer:"):].strip() if step.strip().startswith("Answer:") else None

        def verify(self, answer: str | None, task: Task) -> bool:
            return answer == task.answer

        def advance(self, state, action):  # type: ignore[no-untyped-def]
            if os.getpid() == self.driver_pid:
                raise AssertionError(f"env step {action!r} ran in the driver")
            return super().advance(state, action)

    env = Driverless([Task(id=f"t{k}", question=f"What is 2 + {k}?", answer="5") for k in (3, 4)], max_steps=6,
                     reward_mode="outcome")
    env.driver_pid = driver_pid
    return env


def test_rollout_replays_run_on_the_planners_ray_actors(local_ray: None) -> None:
    """The rollout critic's completions are replayed on the executor the planner lends it: with an env that
    refuses to step in the driver, an MCTS search with rollouts on Ray gives the trees of a serial search."""
    from mcts_agent.critics import RolloutConfig, RolloutCritic
    from mcts_agent.llm.scripted import ScriptedBackend

    cfg = SearchConfig(algo="mcts", simulations=3, branching=2, max_step_tokens=40, max_trees_in_flight=2)
    serial_env = driverless_env(-1)
    serial_critic = RolloutCritic(ScriptedBackend(rollout_script), serial_env, config=RolloutConfig(max_tokens=60))
    serial = Planner(ScriptedBackend(rollout_script), serial_env, cfg, serial_critic,
                     executor=SerialExecutor()).run(serial_env.tasks)
    env = driverless_env(os.getpid())
    critic = RolloutCritic(ScriptedBackend(rollout_script), env, config=RolloutConfig(max_tokens=60))
    with pytest.raises(AssertionError, match="ran in the driver"):
        critic([driverless_node(env)])  # outside a search the critic steps in this process
    with RayExecutor(2, resources="CPU=0.5") as ex:
        trees = Planner(ScriptedBackend(rollout_script), env, cfg, critic, executor=ex).run(env.tasks)
        assert critic.executor is None  # taken back at the end of the run
    assert [[(n.action, n.value, n.terminal) for n in t.nodes] for t in trees] == \
        [[(n.action, n.value, n.terminal) for n in t.nodes] for t in serial]
    assert critic.stats.steps_replayed == serial_critic.stats.steps_replayed > 0
    assert critic.stats.finished == serial_critic.stats.finished > 0
    assert any(n.value == 1.0 for t in trees for n in t.nodes)  # rollouts reached the right answer


def driverless_node(env):  # type: ignore[no-untyped-def]
    from mcts_agent.critic import NodeView

    state = env.initial_state(env.tasks[0])
    return NodeView(prompt="", question=state.task.question, steps=(), answer=None, terminal=False, state=state)

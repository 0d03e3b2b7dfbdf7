"""``web/miniwob-<task>``: MiniWoB++ tasks in real headless chromium, branched by replay.

The pages are the ones in the ``miniwob`` wheel (MIT), served by the env's own HTTP server on
127.0.0.1 (``serve="file"``: file:// URLs instead), driven through Selenium by Debian's
``chromium`` and ``chromium-driver`` (``envs.web.browser``). A task is a (page, seed) pair: the
seed fixes the page, so a state is (task, seed, action prefix).

Observation: the task's instruction and the page flattened to ``[ref] tag attrs "text"`` lines
(``envs.web.dom``; at most ``max_chars`` characters of elements, the cut is marked). Actions:
``click(ref)``, ``type(ref, "text")``, ``select(ref, "option")``, ``press("Key")``
(``envs.web.actions``); a malformed action, an unknown ref or an action the element cannot
take is an ``Error: ...`` observation and the episode goes on. The episode ends when the page
says so; reward = max(0, raw task reward) (MiniWoB's raw reward is in [-1, 1]; its default
reward, discounted by elapsed time, is not used), solved when the raw reward is > 0.

Branching: ``ReplayPool`` of ``pool_size`` live browsers keyed by action prefix (LRU). The
payload records the page hash after the reset and after each action; a replay that sees
another page raises ``ReplayMismatch`` and the node ends as stale (``payload["stale"]``).
Browsers step in parallel from the planner's thread executor, or on Ray actors
(``env_executor="ray"``): a pickled env carries its options and tasks, and each copy starts
its own browsers and server. ``close()`` (also at exit and on SIGTERM) stops every browser and
the server.
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence

from mcts_agent.env import Branching, EnvState, RewardMode, Task
from mcts_agent.envs.agent import AgentEnv, Outcome
from mcts_agent.envs.web.actions import HELP
from mcts_agent.envs.web.browser import PageServer
from mcts_agent.envs.web.dom import MAX_CHARS, render
from mcts_agent.envs.web.page import MiniWoBPage, PageResult, fingerprint, html_root, task_names
from mcts_agent.errors import EnvError
from mcts_agent.lifecycle import install_signal_handlers
from mcts_agent.replay import ReplayMismatch, ReplayPool

# Tasks with a registry entry of their own (and a scripted oracle in envs.web.oracle); any other
# page of the wheel is reachable as web/miniwob with task="name".
FEATURED = ("click-button", "click-link", "click-checkboxes", "click-option", "choose-list", "enter-text",
            "login-user", "click-dialog", "click-tab", "click-button-sequence")
SERVES = ("http", "file")
SYSTEM = ("You are a web agent acting on a web page. Each page is shown as lines "
          '[ref] tag attributes "text", indented by nesting. Follow the instruction.\n' + HELP)


def check_task_name(name: Any) -> str:
    """``name`` if it names a MiniWoB++ page in the wheel, else an ``EnvError`` with close matches."""
    names = task_names()
    if not isinstance(name, str) or name not in names:
        hint = difflib.get_close_matches(str(name), names, n=3)
        raise EnvError(f"unknown MiniWoB++ task {name!r}" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                       + f"; expected one of the {len(names)} pages in the miniwob wheel, e.g. {', '.join(names[:4])}")
    return name


def _seeds(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise EnvError(f"seeds must be a count >= 1 or a list of ints, got {seeds!r}")
        return list(range(seeds))
    out = list(seeds)
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in out):
        raise EnvError(f"seeds must be a count >= 1 or a non-empty list of ints >= 0, got {seeds!r}")
    return out


def load_miniwob(path: Any = None, split: str = "test", limit: int | None = None, seed: int | None = None,
                 task: str | Sequence[str] = "click-button", **kwargs: Any) -> list[Task]:
    """Tasks for the CLI (``--env web/miniwob-click-button --limit N``): seeds ``seed, seed+1, ...`` of each page.

    Reading a task's first page needs a browser: one is started and closed here."""
    if path is not None:
        raise EnvError(f"MiniWoB++ tasks come from the miniwob wheel; got a data path {path!r}")
    env = MiniWoBEnv(task=task, seeds=[(seed or 0) + i for i in range(limit or 5)], pool_size=1, **kwargs)
    try:
        return list(env.tasks)
    finally:
        env.close()


class MiniWoBEnv(AgentEnv):
    """MiniWoB++ pages ``task`` (a name or a list) x ``seeds`` in headless chromium."""

    branching = Branching.REPLAY
    stop = ("\n",)  # an action is one line
    # Observations are "user" turns: pages are not results of tool calls (no tool schemas), and
    # templates that expect a tool turn to follow an assistant tool call would misrender "tool".

    def __init__(self, tasks: Sequence[Task] | None = None, *, task: str | Sequence[str] = "click-button",
                 seeds: int | Sequence[int] = 3, pool_size: int = 2, max_steps: int = 8, max_chars: int = MAX_CHARS,
                 serve: str = "http", reload: str = "task", chrome_binary: str | None = None,
                 chromedriver: str | None = None, **kwargs: Any) -> None:
        if serve not in SERVES:
            raise EnvError(f"serve must be one of {list(SERVES)}, got {serve!r}")
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
            raise EnvError(f"pool_size must be an int >= 1 (live browsers), got {pool_size!r}")
        if not isinstance(max_chars, int) or max_chars < 200:
            raise EnvError(f"max_chars must be an int >= 200, got {max_chars!r}")
        names = [task] if isinstance(task, str) else list(task)
        names = [check_task_name(n) for n in names]
        if not names:
            raise EnvError("task must name at least one MiniWoB++ page")
        self._pending: list[tuple[str, int]] | None = None
        self._init = {"task": names, "seeds": seeds, "pool_size": pool_size, "max_steps": max_steps,
                      "max_chars": max_chars, "serve": serve, "reload": reload, "chrome_binary": chrome_binary,
                      "chromedriver": chromedriver, **kwargs}
        super().__init__([], max_steps=max_steps, **kwargs)
        self.max_chars, self.pool_size = max_chars, pool_size
        self.serve, self.server = serve, None
        install_signal_handlers()  # browsers may start in executor threads, where handlers cannot be set
        self.pool: ReplayPool[MiniWoBPage] = ReplayPool(
            lambda: MiniWoBPage(self._base_url(), chrome_binary=chrome_binary, chromedriver=chromedriver, reload=reload),
            MiniWoBPage.reset, MiniWoBPage.step, capacity=pool_size, close=MiniWoBPage.close, fingerprint=fingerprint)
        self._pending = None if tasks is not None else [(n, s) for n in names for s in _seeds(seeds)]
        if tasks is not None:
            self.tasks = list(tasks)

    @property
    def tasks(self) -> list[Task]:
        """The env's tasks; their first pages are read (in a browser) on first use."""
        if self._pending is not None:
            self._tasks = [self.make_task(n, s) for n, s in self._pending]
            self._pending = None
        return self._tasks

    @tasks.setter
    def tasks(self, value: list[Task]) -> None:
        self._tasks = list(value)

    def _base_url(self) -> str:
        """The pages' root URL: the env's HTTP server on 127.0.0.1 (started on first use), else file://."""
        if self.serve == "http":
            if self.server is None or not self.server.alive:
                try:
                    self.server = PageServer(html_root())
                except OSError:  # no loopback socket here: the pages also work from files
                    self.serve = "file"
            if self.server is not None and self.server.alive:
                return self.server.url
        return html_root().as_uri() + "/"

    def make_task(self, name: str, seed: int) -> Task:
        """The task of page ``name`` at ``seed``: its question is the first observation."""
        first: PageResult = self.pool.start((check_task_name(name), seed))
        return Task(id=f"miniwob-{name}-{seed}", question=render(first.snapshot, self.max_chars),
                    meta={"task": name, "seed": seed, "hash": first.hash})

    @staticmethod
    def key(task: Task) -> tuple[str, int]:
        meta = task.meta
        if not isinstance(meta.get("task"), str) or not isinstance(meta.get("seed"), int):
            raise EnvError(f"task {task.id!r} needs meta['task'] (a MiniWoB++ page) and meta['seed'] (an int)")
        return meta["task"], meta["seed"]

    # ----- AgentEnv ---------------------------------------------------------------------
    def messages(self, task: Task) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task.question}]

    def start(self, task: Task) -> tuple[Any, Any]:
        name, seed = self.key(task)
        first = task.meta.get("hash")
        return {"task": name, "seed": seed, "hashes": [first] if first else [], "done": False,
                "raw_reward": None, "stale": False}, None

    def act(self, state: EnvState, action: str) -> Outcome:
        p = state.payload
        try:
            res: PageResult = self.pool.step((p["task"], p["seed"]), state.steps, action, expect=p["hashes"])
        except ReplayMismatch as e:
            return Outcome(f"Error: this page cannot be reached again by replay (stale node): {e}",
                           {**p, "stale": True}, terminated=True, role="user", info={"stale": True})
        snap = res.snapshot
        payload = {**p, "hashes": [*p["hashes"], res.hash], "done": snap.done,
                   "raw_reward": snap.raw_reward if snap.done else None}
        info = {"valid": res.error is None, "raw_reward": payload["raw_reward"]}
        if res.error is not None:
            return Outcome(f"Error: {res.error}.", payload, role="user", info=info)
        if snap.done:
            obs = "The episode is over."
            if self.reward_mode is RewardMode.OUTCOME:  # evaluation never shows the task's verdict
                obs += f" Task reward: {snap.raw_reward:g}."
            return Outcome(obs, payload, reward=max(0.0, snap.raw_reward), terminated=True,
                           answer="; ".join(state.steps + (action.strip(),)), role="user", info=info)
        return Outcome(render(snap, self.max_chars), payload, role="user", info=info)

    def verify_state(self, state: EnvState, task: Task) -> bool:
        p = state.payload or {}
        return bool(p.get("done")) and not p.get("stale") and (p.get("raw_reward") or 0.0) > 0

    # ----- lifecycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Stop every browser of the pool and the page server (idempotent)."""
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.close()
        if getattr(self, "server", None) is not None:
            self.server.close()
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        """What a copy in another process (a Ray or process worker) is built from: the options
        and the tasks; its browsers and page server are its own, started there on first use."""
        return {"init": self._init, "tasks": self._tasks if self._pending is None else None,
                "reward_mode": self.reward_mode}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["tasks"], **state["init"])  # type: ignore[misc]
        self.reward_mode = state["reward_mode"]


CHECK_KWARGS = {"seeds": 2, "pool_size": 1}

"""A world model for look-ahead (after WebEvolver): search imagined states, confirm with real steps.

A model (the policy or another backend) predicts the world's next observation, so MCTS
can expand imagined states without touching the real env (a browser, a JVM) and the
critic scores them; only the chosen actions are sent to the real world.

* ``WorldModel.predict(items)``: one batched ``generate`` call for every (state, action);
  the prompt shows the task text, the last ``history_turns`` turns and the new action
  (never the gold: ``state.task`` is search's view of the task).
* ``ImaginedEnv(real, world_model, depth)``: a ``SearchEnv`` that shares the real env's
  prompt and branches by snapshot; its steps are the world model's predictions (the
  planner hands it each round's steps in one ``transition_batch`` call). At ``depth``
  imagined turns an imagined state is a leaf: its state is ``truncated``, and the
  transition reports it as ended (``terminated`` in the step tuple) so that the critic
  scores it: the planner gives truncated nodes 0 without asking the critic. Where the
  real env's ``max_steps`` is reached it is truncated, as in the real env.
* ``lookahead_search``: receding-horizon planning over many tasks at once (see its docstring).

A critic that reads the payload of a state (a verifier) sees ``{"real": ..., "imagined": k}``
on imagined states: use critics that read the prompt (self-evaluation, judges, PRMs).
"""

from __future__ import annotations

import difflib
import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from mcts_agent.env import Branching, ChatFormatter, EnvState, Message, Task, Transition, Turn
from mcts_agent.errors import ConfigError, EnvError
from mcts_agent.llm.types import Backend, GenerationRequest

SYSTEM = ("You simulate the environment of an agent's task. Given the task, the recent turns and the agent's "
          "new action, reply with exactly the environment's next observation, as the environment would write "
          "it, and nothing else.")


@dataclass
class WorldModelConfig:
    """How the world model is asked for the next observation."""

    max_tokens: int = field(default=128, metadata={"help": "token budget of one predicted observation"})
    history_turns: int = field(default=4, metadata={"help": "recent (action, observation) turns shown (0 = none)"})
    temperature: float = field(default=0.0, metadata={"help": "sampling temperature (0 = greedy)"})
    max_chars: int = field(default=1500, metadata={"help": "characters of each shown observation (longer ones are cut)"})

    def __post_init__(self) -> None:
        for name, low in (("max_tokens", 1), ("history_turns", 0), ("max_chars", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"WorldModelConfig.{name} must be an integer >= {low}, got {value!r}")
        t = self.temperature
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
            raise ConfigError(f"WorldModelConfig.temperature must be a finite number >= 0, got {t!r}")


@dataclass
class WorldModelStats:
    """What the world model cost so far."""

    calls: int = 0
    predictions: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0


class WorldModel:
    """Predicts the next observation of (state, action) pairs with ``backend``, one batched call per ``predict``."""

    def __init__(self, backend: Backend, config: WorldModelConfig | None = None, seed: int = 0) -> None:
        self.backend = backend
        self.config = config or WorldModelConfig()
        self.seed = seed
        self.stats = WorldModelStats()
        self.tokens_by_task: dict[str, int] = {}  # generated tokens per task id

    def _clip(self, text: str | None) -> str:
        text = text or ""
        return text if len(text) <= self.config.max_chars else text[:self.config.max_chars] + " ..."

    def messages(self, state: EnvState, action: str) -> list[Message]:
        """The chat asking for the observation after ``action`` from ``state``."""
        n = self.config.history_turns
        shown = state.turns[-n:] if n else ()
        parts = [f"Task:\n{state.task.question.strip()}"]
        if shown:
            parts.append("Recent turns:\n" + "\n".join(
                f"Action: {t.action.strip()}\nObservation: {self._clip(t.observation)}" for t in shown))
        parts.append(f"New action: {action.strip()}\nReply with the next observation only.")
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]

    def prompt(self, state: EnvState, action: str) -> str:
        return self.backend.format_chat(self.messages(state, action))

    def predict(self, items: Sequence[tuple[EnvState, str]]) -> list[str]:
        """The predicted next observation of each (state, action), in order: ONE ``generate`` call."""
        items = list(items)
        if not items:
            return []
        c = self.config
        requests = [GenerationRequest(prompt=self.prompt(s, a), n=1, max_tokens=c.max_tokens,
                                      temperature=c.temperature, top_p=1.0, seed=self.seed)
                    for s, a in items]  # no stop strings: the model's end of turn ends the observation
        t0 = time.perf_counter()
        results = self.backend.generate(requests)
        self.stats.seconds += time.perf_counter() - t0
        self.stats.calls += 1
        self.stats.predictions += len(items)
        out = []
        for (state, _), comps in zip(items, results):
            tokens = len(comps[0].token_ids)
            self.stats.generated_tokens += tokens
            self.tokens_by_task[state.task.id] = self.tokens_by_task.get(state.task.id, 0) + tokens
            out.append(comps[0].text.strip())
        return out


class ImaginedEnv:
    """The real env's prompt over imagined states: each step is a world-model prediction.

    The driver sets each task's root (``set_root``) to its current real state; every state
    below it is imagined (``payload = {"real": <the root's payload>, "imagined": k}``).
    """

    branching = Branching.SNAPSHOT

    def __init__(self, real: Any, world_model: WorldModel, depth: int, role: str | None = None) -> None:
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ConfigError(f"ImaginedEnv depth must be an integer >= 1, got {depth!r}")
        self.real = real
        self.world_model = world_model
        self.depth = depth
        self.role = role  # chat role of a predicted observation before any real turn (default "tool")
        self.roots: dict[str, EnvState] = {}
        self.imagined: dict[str, int] = {}  # imagined steps per task id
        self._lock = threading.Lock()

    # ----- the real env's prompt and settings --------------------------------------------
    reward_mode = property(lambda self: self.real.reward_mode)
    turn_based = property(lambda self: self.real.turn_based)
    step_delimiter = property(lambda self: self.real.step_delimiter)
    action_stop = property(lambda self: self.real.action_stop)
    keep_stop = property(lambda self: self.real.keep_stop)
    max_steps = property(lambda self: self.real.max_steps)

    def messages(self, task: Task) -> list[Message]:
        return self.real.messages(task)

    def tools(self, task: Task) -> Any:
        return self.real.tools(task) if hasattr(self.real, "tools") else None

    def policy_prompt(self, state: EnvState, format_chat: ChatFormatter) -> str:
        return self.real.policy_prompt(state, format_chat)

    def answer_key(self, answer: str) -> str:
        return self.real.answer_key(answer)

    # ----- imagined states ------------------------------------------------------------
    def set_root(self, task_id: str, state: EnvState) -> None:
        """Plan ``task_id`` from the real ``state`` (the driver calls this before each search)."""
        if state.done:
            raise EnvError(f"task {task_id!r}: cannot plan from a finished episode")
        self.roots[task_id] = state

    def initial_state(self, task: Task) -> EnvState:
        try:
            return self.roots[task.id]
        except KeyError:
            raise EnvError(f"ImaginedEnv has no root for task {task.id!r}: call set_root(task_id, real_state) first; "
                           f"roots are set for {sorted(self.roots)[:5]}") from None

    def transition(self, state: EnvState, action: str) -> Transition:
        return self.transition_batch([(state, action)])[0]

    def transition_batch(self, items: Sequence[tuple[EnvState, str]]) -> list[Transition]:
        """Step every (state, action) in imagination: one ``WorldModel.predict`` call; the real env is untouched."""
        items = list(items)
        for state, action in items:
            if state.done:
                raise EnvError("the imagined episode is over; plan from a live state")
            if not isinstance(action, str):
                raise EnvError(f"action must be a str, got {type(action).__name__}")
        predicted = self.world_model.predict(items)
        out: list[Transition] = []
        for (state, action), obs in zip(items, predicted):
            root = self.initial_state(state.task)
            k = len(state.turns) - len(root.turns) + 1
            role = state.turns[-1].role if state.turns else (self.role or "tool")
            turns = state.turns + (Turn(action, obs, role),)
            over = len(turns) >= self.real.max_steps  # the real episode's budget: truncated (value 0)
            horizon = k >= self.depth and not over  # an imagined leaf: the critic scores it
            nxt = replace(state, turns=turns, payload={"real": root.payload, "imagined": k}, live=None,
                          answer=None, terminated=False, truncated=over or k >= self.depth)
            out.append((nxt, 0.0, horizon, over, {"answer": None, "imagined": k}))
            with self._lock:
                self.imagined[state.task.id] = self.imagined.get(state.task.id, 0) + 1
        return out


def normalise(text: str | None) -> str:
    return " ".join((text or "").split())


def observation_accuracy(pairs: Sequence[tuple[str, str]]) -> dict[str, float]:
    """Exact-match rate (after whitespace normalisation) and mean ``difflib`` similarity of
    (predicted, real) observation pairs (0.0 for both when there are no pairs)."""
    pairs = list(pairs)
    if not pairs:
        return {"pairs": 0, "exact_match": 0.0, "similarity": 0.0}
    exact = sum(normalise(p) == normalise(r) for p, r in pairs)
    sim = sum(difflib.SequenceMatcher(None, normalise(p), normalise(r)).ratio() for p, r in pairs)
    return {"pairs": len(pairs), "exact_match": exact / len(pairs), "similarity": sim / len(pairs)}


# ----- receding-horizon planning ---------------------------------------------------------
@dataclass
class LookaheadConfig:
    """Budgets of world-model look-ahead (per task; ``max_real_steps`` counts real env steps)."""

    simulations: int = field(default=4, metadata={"help": "MCTS expansions per real step (over imagined states)"})
    branching: int = field(default=2, metadata={"help": "candidate actions sampled per expansion"})
    depth: int = field(default=2, metadata={"help": "imagined turns below the real state (the horizon)"})
    max_real_steps: int = field(default=12, metadata={"help": "real env steps per task"})
    max_step_tokens: int = field(default=64, metadata={"help": "token cap of one action"})
    temperature: float = field(default=0.8, metadata={"help": "policy sampling temperature"})
    seed: int = field(default=0, metadata={"help": "seed of the policy's sampling"})

    def __post_init__(self) -> None:
        for name in ("simulations", "branching", "depth", "max_real_steps", "max_step_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"LookaheadConfig.{name} must be an integer >= 1, got {value!r}")
        t = self.temperature
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
            raise ConfigError(f"LookaheadConfig.temperature must be a finite number >= 0, got {t!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"LookaheadConfig.seed must be an integer, got {self.seed!r}")


@dataclass
class LookaheadResult:
    """One task's episode: its final real state and what it cost."""

    task_id: str
    state: EnvState
    solved: bool = False
    real_steps: int = 0
    imagined_steps: int = 0
    predictions: list[tuple[str, str]] = field(default_factory=list)  # (predicted, real) per real step
    policy_tokens: int = 0
    critic_nodes: int = 0  # nodes the critic scored (self-evaluation generates no tokens)
    world_model_tokens: int = 0


def _real_step(env: Any, item: tuple[EnvState, str]) -> Transition:
    return env.transition(*item)


def lookahead_search(tasks: Sequence[Task], real_env: Any, policy: Backend, world_model: WorldModel, critic: Any,
                     config: LookaheadConfig, executor: Any = None, role: str | None = None) -> list[LookaheadResult]:
    """Plan in imagination, act for real, repeat: results in task order.

    Each round, for every live task at once: its root is set to its current real state, ONE
    ``Planner`` runs MCTS over ``ImaginedEnv`` (the critic scores imagined states), each root's
    most visited child (of those not cut by the token cap) is executed in the real env (one
    ``executor.map``, or serially), and (predicted, real) observations are recorded. A task
    stops when its episode ends, its ``max_real_steps`` are spent, or no usable action came back.
    ``role``: chat role of predicted observations before the first real turn.
    """
    from mcts_agent.search import Planner, SearchConfig

    imagined = ImaginedEnv(real_env, world_model, config.depth, role=role)
    results = [LookaheadResult(task_id=t.id, state=real_env.initial_state(t)) for t in tasks]
    tokens_before = dict(world_model.tokens_by_task)
    live = [i for i, r in enumerate(results) if not r.state.done]
    rounds = 0
    while live:
        for i in live:
            imagined.set_root(tasks[i].id, results[i].state)
        search = SearchConfig(algo="mcts", simulations=config.simulations, branching=config.branching,
                              max_step_tokens=config.max_step_tokens, temperature=config.temperature,
                              seed=config.seed + rounds, answer_rule="visits", max_trees_in_flight=len(live),
                              env_executor="serial")
        trees = Planner(policy, imagined, search, critic).run([tasks[i] for i in live])
        rounds += 1
        steps: list[tuple[int, Any]] = []
        for i, tree in zip(live, trees):
            r = results[i]
            r.policy_tokens += int(tree.stats.get("generated_tokens", 0))
            r.critic_nodes += sum(1 for n in tree.nodes if n.critic_scores)
            kids = [tree.nodes[c] for c in tree.root.children if tree.nodes[c].finish_reason != "length"]
            if kids:
                steps.append((i, max(kids, key=lambda n: (n.visits, n.q, -n.id))))
        items = [(results[i].state, node.action) for i, node in steps]
        if executor is not None:
            outs = executor.map(_real_step, real_env, items)
        else:
            outs = [_real_step(real_env, item) for item in items]
        for (i, node), out in zip(steps, outs):
            r = results[i]
            r.state = out[0]
            r.real_steps += 1
            r.predictions.append((node.observation or "", r.state.turns[-1].observation or ""))
        live = [i for i, _ in steps if not results[i].state.done and results[i].real_steps < config.max_real_steps]
    for t, r in zip(tasks, results):
        r.solved = bool(real_env.verify_state(r.state, t))
        r.imagined_steps = imagined.imagined.get(t.id, 0)
        r.world_model_tokens = world_model.tokens_by_task.get(t.id, 0) - tokens_before.get(t.id, 0)
    return results

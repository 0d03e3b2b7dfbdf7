"""The batched planner: many trees in flight, one policy call and one critic call per round."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

from mcts_agent.critic import Critic
from mcts_agent.env import SearchEnv, Task, Turn, check_search_env
from mcts_agent.errors import ConfigError
from mcts_agent.executor import SKIPPED, Executor, make_executor
from mcts_agent.llm.types import Backend, EvalSuffix, Evaluation
from mcts_agent.search.baselines import Beam, BestOfN, Greedy, SelfConsistency
from mcts_agent.search.config import Algo, SearchConfig
from mcts_agent.search.expand import (Candidate, SearchState, attach_chain, attach_children, chain_parts, node_view,
                                      plan_children, replay_chain)
from mcts_agent.search.mcts import MCTS
from mcts_agent.search.strategy import Pending, Strategy
from mcts_agent.tree import Node, Tree

log = logging.getLogger(__name__)

STRATEGIES: dict[Algo, type[Strategy]] = {
    Algo.MCTS: MCTS, Algo.GREEDY: Greedy, Algo.BEST_OF_N: BestOfN,
    Algo.SELF_CONSISTENCY: SelfConsistency, Algo.BEAM: Beam,
}


@dataclass
class RunStats:
    """Where a run's wall time went (the efficiency benchmark reads these)."""

    wall_seconds: float = 0.0
    policy_seconds: float = 0.0
    critic_seconds: float = 0.0
    env_seconds: float = 0.0  # wall time of the rounds' batched env-step calls
    env_steps: int = 0
    rounds: int = 0
    policy_calls: int = 0
    critic_calls: int = 0
    prompts: int = 0
    generated_tokens: int = 0
    nodes: int = 0
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def outside_model_fraction(self) -> float:
        inside = self.policy_seconds + self.critic_seconds
        return max(0.0, self.wall_seconds - inside) / self.wall_seconds if self.wall_seconds else 0.0


class Planner:
    """Searches many tasks at once with one strategy, one backend and one critic.

    ``critic`` may be None: new nodes then get the neutral value 0.5 and search is
    guided by the policy priors alone. A round's env steps run in one batched call on
    ``executor`` (default: ``config.env_workers`` threads, or serially for one worker).
    With ``config.fused_eval``, a critic whose prompt extends the policy's is answered by
    the generation call itself (``fused_request``); the critic still checks every value's text.
    """

    def __init__(self, backend: Backend, env: SearchEnv, config: SearchConfig, critic: Critic | None = None,
                 env_id: str = "", executor: Executor | None = None) -> None:
        check_search_env(env)
        self.backend = backend
        self.env = env
        self.config = config
        self.critic = critic
        self.env_id = env_id
        self.strategy = STRATEGIES[config.algo](config, env)
        self.stats = RunStats()
        self._own_executor = executor is None
        self.executor = executor or make_executor(config.env_executor, config.env_workers, **config.executor_options())
        self._evaluations: dict[tuple[int, int], Evaluation] = {}  # (tree index, node id) -> this round's fused evaluation

    def fused_request(self) -> EvalSuffix | None:
        """What to ask the backend to score after each sampled step, or None when fusion does not apply.

        A step's node prompt is the parent's prompt + step + delimiter in reasoning envs
        (not in turn-based envs, nor where the stop string stays in the action).
        """
        env, critic = self.env, self.critic
        if not self.config.fused_eval or critic is None or not getattr(self.backend, "supports_fused_eval", False):
            return None
        if env.turn_based or env.keep_stop:
            return None
        spec = critic.prompt_suffix()
        return None if spec is None else EvalSuffix(env.step_delimiter + spec[0], tuple(spec[1]))

    def prompt_of(self, st: SearchState, node: Node) -> str:
        """The text the policy continues from ``node``: rendered once (for the critic or the first
        expansion), recorded in the tree, and read back from it afterwards."""
        prompt = st.tree.prompt(node.id)
        if prompt is None:
            prompt = self.env.policy_prompt(node.state, self.backend.format_chat)
            st.tree.record_prompt(node.id, prompt)
        return prompt

    def run(self, tasks: Sequence[Task], on_tree: Callable[[int, Tree], None] | None = None) -> list[Tree]:
        """Search every task; return the trees in task order."""
        out: list[Tree | None] = [None] * len(tasks)
        for i, tree in self.iter_trees(tasks):
            out[i] = tree
            if on_tree is not None:
                on_tree(i, tree)
        return [t for t in out if t is not None]

    def iter_trees(self, tasks: Sequence[Task]) -> Iterator[tuple[int, Tree]]:
        """Yield ``(task index, finished tree)`` as trees finish (not in task order)."""
        if not tasks:
            raise ConfigError("no tasks to search: the task list is empty")
        queue = list(enumerate(tasks))[::-1]
        live: list[SearchState] = []
        start = time.perf_counter()
        if self.critic is not None:  # a critic that steps the env (rollouts) steps it where the planner does
            self.critic.use_executor(self.executor)
        try:
            while queue or live:
                while queue and len(live) < self.config.max_trees_in_flight:
                    live.append(self._start(*queue.pop()))
                self._round(live)
                still = []
                for st in live:
                    if self._spent(st):
                        yield st.index, self._finish(st)
                    else:
                        still.append(st)
                live = still
        finally:
            self.stats.wall_seconds += time.perf_counter() - start
            if self.critic is not None:
                self.critic.use_executor(None)
            if self._own_executor:
                self.executor.close()

    # ----- one round -----------------------------------------------------------------
    def _round(self, live: list[SearchState]) -> None:
        work: list[tuple[SearchState, Pending]] = []
        for st in live:
            if not self._spent(st):
                work.extend((st, p) for p in self.strategy.requests(st, lambda n, st=st: self.prompt_of(st, n)))
        if not work:
            return
        self.stats.rounds += 1
        self._evaluations.clear()
        fused = self.fused_request()
        requests = [replace(p.request, evaluate=fused) if fused is not None and not p.chain else p.request
                    for _, p in work]
        t0 = time.perf_counter()
        results = self.backend.generate(requests)
        gen_seconds = time.perf_counter() - t0
        self.stats.policy_seconds += gen_seconds
        self.stats.policy_calls += 1
        self.stats.prompts += len(work)
        self.stats.batch_sizes.append(sum(p.request.n for _, p in work))
        per_request = gen_seconds / len(work)
        for (st, _), comps in zip(work, results):
            st.model_calls += 1
            self.stats.generated_tokens += sum(len(c.token_ids) for c in comps)
        produced = self._step_all(work, results, per_request)
        self._evaluate(work, produced)
        self._evaluations.clear()
        for (st, p), nodes in zip(work, produced):
            self.strategy.update(st, p, nodes)

    def _step_all(self, work: list[tuple[SearchState, Pending]], results: list[list], per_request: float) -> list[list[Node]]:
        """Turn the round's samples into nodes: every env step of the round in ONE executor call."""
        merge = self.config.merge_duplicates
        planned: dict = {}
        plans: list[list[Candidate] | list[tuple[object, list[str]]]] = []
        jobs: list[tuple] = []  # (function, its arguments): one executor item each
        deadlines: list[float | None] = []
        for (st, p), comps in zip(work, results):
            if p.chain:
                chains = [(c, chain_parts(self.env, c)) for c in comps]
                plans.append(chains)
                jobs.extend((replay_chain, (st.tree.root.state, parts)) for _, parts in chains)
            else:
                cands = plan_children(self.env, st, st.tree.nodes[p.node_id], comps, merge=merge,
                                      seconds=per_request, planned=planned)
                plans.append(cands)
                # A turn-based action cut by max_tokens never reaches the world (it is half a call).
                jobs.extend((_transition, (c.parent.state, c.action, self.env.turn_based and c.cut)) for c in cands)
            deadlines.extend([st.deadline] * len(plans[-1]))
        t0 = time.perf_counter()
        batch = getattr(self.env, "transition_batch", None)
        if batch is not None and jobs and all(fn is _transition for fn, _ in jobs):
            # The env steps a round's plain steps in ONE call (a world model predicts them together);
            # cut actions never reach it, as below. Deadlines do not apply inside that one call.
            plain = [job[:2] for _, job in jobs if not job[2]]
            results = iter(batch(plain) if plain else ())
            stepped = [_transition(self.env, job) if job[2] else next(results) for _, job in jobs]
        else:
            stepped = self.executor.map(_run_job, self.env, jobs, deadlines) if jobs else []
        self.stats.env_seconds += time.perf_counter() - t0
        self.stats.env_steps += len(jobs)
        produced: list[list[Node]] = []
        i = 0
        for (st, p), plan in zip(work, plans):
            out = stepped[i:i + len(plan)]
            i += len(plan)
            if p.chain:
                before = len(st.tree.nodes)
                for (c, parts), res in zip(plan, out):
                    attach_chain(self.env, st, c, parts, res, merge=merge, seconds=per_request / max(1, len(plan)))
                produced.append(st.tree.nodes[before:])
            else:
                nodes = attach_children(self.env, st, st.tree.nodes[p.node_id], plan, out)
                self._keep_evaluations(st, [c for c, r in zip(plan, out) if r is not SKIPPED], nodes)
                produced.append(nodes)
        return produced

    def _keep_evaluations(self, st: SearchState, cands: Sequence[Candidate], nodes: Sequence[Node]) -> None:
        """Remember the fused evaluation of each new node's sample until the critic call."""
        for cand, node in zip(cands, nodes):
            ev = cand.flags.evaluation if cand.flags is not None else None
            if ev is not None:
                self._evaluations[(st.index, node.id)] = ev

    def _evaluate(self, work: list[tuple[SearchState, Pending]], produced: list[list[Node]]) -> None:
        """Score every new node of the round in ONE critic call (truncated nodes get 0)."""
        targets: list[tuple[SearchState, Node]] = []
        for (st, _), nodes in zip(work, produced):
            for n in nodes:
                if n.truncated and not n.terminal:
                    n.value = 0.0
                elif self.strategy.needs_value(n):
                    targets.append((st, n))
        if not targets:
            return
        if self.critic is None:
            for _, n in targets:
                n.value = 0.5
            return
        t0 = time.perf_counter()
        views = [node_view(n, self.prompt_of(st, n), st.task.question, self._evaluations.get((st.index, n.id)))
                 for st, n in targets]
        values = self.critic(views)
        seconds = time.perf_counter() - t0
        self.stats.critic_seconds += seconds
        self.stats.critic_calls += 1
        members = getattr(self.critic, "last_scores", None) or {}  # an ensemble's members, each recorded too
        for i, ((st, n), v) in enumerate(zip(targets, values)):
            n.value = v
            n.critic_scores[self.critic.name] = v
            for key, scores in members.items():
                n.critic_scores[key] = scores[i]
            n.seconds += seconds / len(targets)
        for st in {id(st): st for st, _ in targets}.values():
            st.critic_calls += 1

    # ----- tree lifecycle ------------------------------------------------------------
    def _start(self, index: int, task: Task) -> SearchState:
        state = self.env.initial_state(task)
        tree = Tree(tree_id=f"{task.id}", task_id=task.id, question=task.question,
                    algo=self.config.algo.value, env_id=self.env_id)
        tree.root.state = state
        tree.meta.update(env_id=self.env_id, reward_mode=self.env.reward_mode.value,
                         turn_based=bool(self.env.turn_based), config=self.config.to_dict())
        started = time.perf_counter()
        deadline = started + self.config.time_budget if self.config.time_budget is not None else None
        return SearchState(index=index, task=state.task, tree=tree, started=started, deadline=deadline)

    def _spent(self, st: SearchState) -> bool:
        c = self.config
        if st.finished:
            return True
        if c.algo is Algo.MCTS and st.simulations >= c.simulations:
            return True
        if c.token_budget is not None and st.tokens >= c.token_budget:
            return True
        return st.deadline is not None and time.perf_counter() >= st.deadline

    def _finish(self, st: SearchState) -> Tree:
        tree = st.tree
        chosen = self.strategy.select_answer(st)
        tree.answer_node = chosen.id if chosen is not None else None
        tree.answer = chosen.answer if chosen is not None else None
        self.stats.nodes += len(tree.nodes)
        tree.stats = {
            "policy_calls": st.model_calls, "critic_calls": st.critic_calls, "generated_tokens": st.tokens,
            "simulations": st.simulations, "nodes": len(tree.nodes),
            "seconds": round(time.perf_counter() - st.started, 4),
        }
        return tree


def _transition(env: SearchEnv, job: tuple) -> object:
    state, action, cut = job
    if cut:
        return replace(state, turns=state.turns + (Turn(action),), truncated=True), 0.0, False, True, {"answer": None}
    return env.transition(state, action)


def _run_job(env: SearchEnv, item: tuple) -> object:
    fn, job = item
    return fn(env, job)


def run_search(tasks: Sequence[Task], env: SearchEnv, backend: Backend, config: SearchConfig | None = None,
               critic: Critic | None = None, env_id: str = "", executor: Executor | None = None) -> list[Tree]:
    """Search every task with one planner; return the trees in task order."""
    return Planner(backend, env, config or SearchConfig(), critic, env_id=env_id, executor=executor).run(tasks)

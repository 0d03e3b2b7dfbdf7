"""World-model look-ahead on TextCraft: greedy, MCTS on the real env, and look-ahead in imagination.

On TextCraft test tasks with the embedded model (evaluation mode: no gold reaches search):

(a) **greedy**: one action per real step, ``max_real_steps`` real steps;
(b) **MCTS on the real env**: the tree branches real states (every expansion is a real env
    step, counted), ``simulations x max_real_steps`` expansions, the same critic;
(c) **look-ahead**: MCTS over imagined states (the model predicts each observation), the
    chosen action executed for real, at most ``max_real_steps`` real steps (equal to (a)).

For each: success with a 95% Wilson interval, real env steps per task, generated tokens per
task (policy, world model) and critic-scored nodes per task; for (c) the world model's
accuracy against the real observations (exact match after whitespace normalisation, mean
``difflib`` similarity).

    python -m mcts_agent.benchmarks.world_model --tasks 10 --out results/world_model.json
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Sequence

from mcts_agent.benchmarks.common import print_table, write_result
from mcts_agent.env import EnvState, Task
from mcts_agent.runner import wilson_interval


def counting_env(tasks: Sequence[Task], max_steps: int) -> Any:
    """A TextCraft env that counts the real actions it answers (``acts``)."""
    from mcts_agent.envs.agent import Outcome
    from mcts_agent.envs.text.textcraft import TextCraftEnv

    class Counting(TextCraftEnv):
        acts = 0

        def act(self, state: EnvState, action: str) -> Outcome:
            self.acts += 1
            return super().act(state, action)

    return Counting(list(tasks), max_steps=max_steps)


def row(name: str, ok: Sequence[bool], real_steps: int, policy_tokens: int, seconds: float,
        wm_tokens: int = 0, critic_nodes: int = 0) -> dict[str, Any]:
    n = len(ok)
    lo, hi = wilson_interval(sum(ok), n)
    return {"method": name, "tasks": n, "solved": sum(ok), "success": sum(ok) / n, "ci95": [round(lo, 3), round(hi, 3)],
            "real_steps_per_task": real_steps / n, "policy_tokens_per_task": policy_tokens / n,
            "wm_tokens_per_task": wm_tokens / n, "critic_nodes_per_task": critic_nodes / n,
            "seconds": round(seconds, 1)}


def planner_run(algo: str, tasks: list[Task], backend: Any, critic: Any, a: argparse.Namespace) -> dict[str, Any]:
    """(a) greedy or (b) MCTS on the real env, through the planner."""
    from mcts_agent.search import Planner, SearchConfig

    env = counting_env(tasks, a.max_real_steps)
    cfg = SearchConfig(algo=algo, simulations=a.simulations * a.max_real_steps, branching=a.branching,
                       max_step_tokens=a.max_step_tokens, temperature=0.8, seed=a.seed, answer_rule="visits",
                       max_trees_in_flight=len(tasks), env_executor="serial")
    planner = Planner(backend, env, cfg, critic if algo == "mcts" else None)
    t0 = time.perf_counter()
    trees = planner.run(tasks)
    ok = [t.answer_node is not None and bool(env.verify_state(t.nodes[t.answer_node].state, task))
          for t, task in zip(trees, tasks)]
    scored = sum(1 for t in trees for n in t.nodes if n.critic_scores)
    return row("greedy" if algo == "greedy" else "mcts-real", ok, env.acts, planner.stats.generated_tokens,
               time.perf_counter() - t0, critic_nodes=scored)


def lookahead_run(tasks: list[Task], backend: Any, critic: Any, a: argparse.Namespace) -> tuple[dict, dict]:
    """(c) world-model look-ahead; its row and the world model's accuracy."""
    from mcts_agent.envs.world_model import (LookaheadConfig, WorldModel, WorldModelConfig, lookahead_search,
                                             observation_accuracy)

    env = counting_env(tasks, 30)  # the look-ahead's own max_real_steps is the budget
    wm = WorldModel(backend, WorldModelConfig(max_tokens=a.wm_tokens, history_turns=a.history_turns), seed=a.seed)
    cfg = LookaheadConfig(simulations=a.simulations, branching=a.branching, depth=a.depth,
                          max_real_steps=a.max_real_steps, max_step_tokens=a.max_step_tokens, seed=a.seed)
    t0 = time.perf_counter()
    results = lookahead_search(tasks, env, backend, wm, critic, cfg, role="user")
    seconds = time.perf_counter() - t0
    assert env.acts == sum(r.real_steps for r in results), "the look-ahead touched the real env outside its steps"
    r = row("lookahead", [r.solved for r in results], env.acts, sum(r.policy_tokens for r in results), seconds,
            wm_tokens=sum(r.world_model_tokens for r in results), critic_nodes=sum(r.critic_nodes for r in results))
    pairs = [p for res in results for p in res.predictions]
    acc = {**observation_accuracy(pairs), "imagined_steps_per_task": sum(x.imagined_steps for x in results) / len(tasks),
           "world_model_calls": wm.stats.calls, "world_model_seconds": round(wm.stats.seconds, 1),
           "examples": [{"predicted": p, "real": q} for p, q in pairs[:5]]}
    return r, acc


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=10, help="TextCraft test-split tasks")
    p.add_argument("--simulations", type=int, default=3, help="MCTS expansions per real step")
    p.add_argument("--branching", type=int, default=2)
    p.add_argument("--depth", type=int, default=2, help="look-ahead horizon in imagined turns")
    p.add_argument("--max-real-steps", type=int, default=4, help="real env steps per task for (a) and (c)")
    p.add_argument("--max-step-tokens", type=int, default=48)
    p.add_argument("--wm-tokens", type=int, default=48, help="token budget of one predicted observation")
    p.add_argument("--history-turns", type=int, default=4)
    p.add_argument("--critic", default="self-eval", help="critic of (b) and (c) (mcts_agent.critics.make_critic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/world_model.json")
    a = p.parse_args(argv)
    load = os.getloadavg()

    from mcts_agent.critics import make_critic
    from mcts_agent.envs.text.textcraft import load_textcraft
    from mcts_agent.llm import load_backend

    tasks = load_textcraft(split="test", limit=a.tasks, seed=a.seed)
    backend = load_backend("transformers", seed=a.seed)
    try:
        critic = make_critic(a.critic, backend, counting_env(tasks, a.max_real_steps))
        rows = [planner_run("greedy", tasks, backend, None, a)]
        print(rows[-1], flush=True)
        rows.append(planner_run("mcts", tasks, backend, critic, a))
        print(rows[-1], flush=True)
        look, accuracy = lookahead_run(tasks, backend, critic, a)
        rows.append(look)
    finally:
        backend.close()
    print_table(f"TextCraft, SmolLM2-135M (load {load[0]:.2f}): equal real steps for greedy and look-ahead", rows,
                ["method", "tasks", "solved", "success", "ci95", "real_steps_per_task", "policy_tokens_per_task",
                 "wm_tokens_per_task", "critic_nodes_per_task", "seconds"])
    print_table("world-model accuracy (look-ahead's chosen actions)", [accuracy],
                ["pairs", "exact_match", "similarity", "imagined_steps_per_task", "world_model_calls"])
    return write_result(a.out, "world_model", vars(a), rows, accuracy=accuracy,
                        load_average=[round(x, 2) for x in load])


if __name__ == "__main__":
    main()

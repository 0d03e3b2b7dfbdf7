"""Fused evaluation: the self-eval value of a new step read off its generation's KV cache.

On the real embedded model the fused value must equal the unfused critic's value, and a
seeded search must build the same tree with fusion on and off; backends without support
(scripted) go through the critic's own scoring call.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from mcts_agent import envs
from mcts_agent.critics import NodeView, SelfEvalConfig, SelfEvalCritic
from mcts_agent.envs.math.gsm8k import SAMPLE_TASKS
from mcts_agent.llm.scripted import ScriptedBackend
from mcts_agent.llm.types import EvalSuffix, Evaluation, GenerationRequest
from mcts_agent.search import Planner, SearchConfig

TOL = 1e-4


def step_nodes(backend, critic: SelfEvalCritic, samples: int = 4) -> list[NodeView]:  # type: ignore[no-untyped-def]
    """One sampled step per sample of each sample problem, as the planner would view them."""
    env = envs.make("math/gsm8k", tasks=SAMPLE_TASKS, max_steps=3)
    suffix, candidates = critic.prompt_suffix()  # type: ignore[misc]
    roots = [env.initial_state(t) for t in SAMPLE_TASKS]
    prompts = [env.policy_prompt(s, backend.format_chat) for s in roots]
    spec = EvalSuffix(env.step_delimiter + suffix, candidates)
    requests = [GenerationRequest(p, n=samples, max_tokens=24, temperature=1.0, stop=(env.step_delimiter,), seed=i,
                                  evaluate=spec) for i, p in enumerate(prompts)]
    views = []
    for root, comps in zip(roots, backend.generate(requests)):
        for c in comps:
            if not c.text.strip():
                continue
            state = env.transition(root, c.text)[0]
            views.append(NodeView(prompt=env.policy_prompt(state, backend.format_chat), question=root.task.question,
                                  steps=state.steps, answer=None, terminal=False, state=state, evaluation=c.evaluation))
    return views


@pytest.mark.model
@pytest.mark.parametrize("mode", ["turn", "suffix"])
def test_fused_values_equal_unfused(embedded_backend, mode: str) -> None:  # type: ignore[no-untyped-def]
    critic = SelfEvalCritic(embedded_backend, SelfEvalConfig(mode=mode))
    views = step_nodes(embedded_backend, critic)
    assert len(views) >= 4 and all(v.evaluation is not None for v in views)
    calls = embedded_backend.stats.score_calls
    fused = critic(views)
    assert critic.fused == len(views) and critic.scored == 0
    assert embedded_backend.stats.score_calls == calls  # no critic forward pass at all
    plain = critic([replace(v, evaluation=None) for v in views])
    assert critic.scored == len(views)
    assert fused == pytest.approx(plain, abs=TOL)
    assert max(plain) - min(plain) > 1e-3  # real, distinct values, not a constant


@pytest.mark.model
def test_foreign_evaluation_is_not_used(embedded_backend) -> None:  # type: ignore[no-untyped-def]
    critic = SelfEvalCritic(embedded_backend, SelfEvalConfig(mode="turn"))
    view = step_nodes(embedded_backend, critic, samples=1)[0]
    ev = view.evaluation
    assert ev is not None
    for other in (Evaluation(ev.text + " ", ev.candidates, ev.logprobs), Evaluation(ev.text, ("A", "B"), ev.logprobs)):
        critic([replace(view, evaluation=other)])
    assert critic.fused == 0 and critic.scored == 2
    chat = SelfEvalCritic(embedded_backend)  # chat mode: a new conversation, never fused
    assert chat.prompt_suffix() is None
    chat([view])
    assert chat.fused == 0 and chat.scored == 1


def search(backend, fused: bool) -> tuple[list, SelfEvalCritic]:  # type: ignore[no-untyped-def]
    env = envs.make("math/gsm8k", tasks=SAMPLE_TASKS, max_steps=3)
    critic = SelfEvalCritic(backend, SelfEvalConfig(mode="turn"))
    cfg = SearchConfig(simulations=3, branching=3, max_step_tokens=24, seed=3, fused_eval=fused)
    return Planner(backend, env, cfg, critic).run(list(SAMPLE_TASKS)), critic


@pytest.mark.model
def test_search_is_the_same_with_fusion_on_and_off(embedded_backend) -> None:  # type: ignore[no-untyped-def]
    on, fused_critic = search(embedded_backend, True)
    off, plain_critic = search(embedded_backend, False)
    assert fused_critic.fused > 0 and fused_critic.scored == 0
    assert plain_critic.fused == 0 and plain_critic.scored == fused_critic.fused
    for a, b in zip(on, off):
        assert [(n.parent, n.action, n.visits, n.terminal) for n in a.nodes] == \
               [(n.parent, n.action, n.visits, n.terminal) for n in b.nodes]
        assert [n.value for n in a.nodes] == pytest.approx([n.value for n in b.nodes], abs=TOL)
        assert a.answer == b.answer
    assert sum(len(t.nodes) for t in on) > 2 * len(on)


def test_scripted_backend_falls_back() -> None:
    steps = ["Tom has 3 + 5 = 8 apples.", "The answer is 8."]
    backend = ScriptedBackend(lambda prompt, i: steps[min(prompt.count("apples.\n"), 1)] + "\n")
    assert not backend.supports_fused_eval
    env = envs.make("math/gsm8k", tasks=SAMPLE_TASKS[:1], max_steps=3)
    critic = SelfEvalCritic(backend, SelfEvalConfig(mode="turn"))
    planner = Planner(backend, env, SearchConfig(simulations=2, branching=2, fused_eval=True), critic)
    assert planner.fused_request() is None
    trees = planner.run(list(SAMPLE_TASKS[:1]))
    assert all(r.evaluate is None for batch in backend.batches for r in batch)
    assert critic.fused == 0 and critic.scored >= 1
    assert len(trees[0].nodes) > 1 and all(n.value is not None for n in trees[0].nodes[1:])


def test_planner_asks_for_the_critics_suffix() -> None:
    """A backend that claims support gets the critic's suffix after the env's step delimiter."""
    backend = ScriptedBackend(lambda prompt, i: "The answer is 8.\n")
    backend.supports_fused_eval = True  # type: ignore[misc]
    env = envs.make("math/gsm8k", tasks=SAMPLE_TASKS[:1], max_steps=3)
    critic = SelfEvalCritic(backend, SelfEvalConfig(mode="suffix"))
    spec = Planner(backend, env, SearchConfig(), critic).fused_request()
    assert spec == EvalSuffix(env.step_delimiter + critic.config.suffix, (" Yes", " No"))
    assert Planner(backend, env, SearchConfig(fused_eval=False), critic).fused_request() is None
    assert Planner(backend, env, SearchConfig(), SelfEvalCritic(backend)).fused_request() is None  # chat mode
    Planner(backend, env, SearchConfig(simulations=1, branching=2), critic).run(list(SAMPLE_TASKS[:1]))
    assert all(r.evaluate == spec for r in backend.batches[0])
    assert critic.scored >= 1  # no evaluation came back: the critic scored the nodes itself


def test_bad_eval_requests_are_clear() -> None:
    from mcts_agent.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^EvalSuffix.candidates must be a tuple of non-empty strings, got 'Yes'$"):
        EvalSuffix("x", "Yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^GenerationRequest.evaluate must be an EvalSuffix or None, got str$"):
        GenerationRequest("p", evaluate="x")  # type: ignore[arg-type]

"""Critics on the real embedded model (SmolLM2-135M-Instruct): a few nodes each, one call per batch."""

from __future__ import annotations

import pytest

from mcts_agent import envs
from mcts_agent.critics import JudgeConfig, LLMJudgeCritic, NodeView, RolloutConfig, RolloutCritic, SelfEvalCritic
from mcts_agent.envs.math.gsm8k import SAMPLE_TASKS

pytestmark = pytest.mark.model


def gsm8k_nodes(backend, mode: str = "none"):  # type: ignore[no-untyped-def]
    """A fresh node and a one-step node of the first sample problem, plus the env."""
    env = envs.make("math/gsm8k", tasks=SAMPLE_TASKS, reward_mode=mode)
    env.reset(options={"task_index": 0})
    root = env.snapshot()
    step, *_ = env.transition(root, "Tom has 3 + 5 = 8 apples.")
    nodes = [NodeView(prompt=env.policy_prompt(s, backend.format_chat), question=s.task.question, steps=s.steps,
                      answer=s.answer, terminal=s.terminated, reward=None, state=s) for s in (root, step)]
    return env, nodes


def test_self_eval_real_one_score_call(embedded_backend) -> None:  # type: ignore[no-untyped-def]
    _, nodes = gsm8k_nodes(embedded_backend)
    wrong = NodeView(prompt="", question=nodes[1].question, steps=("Tom has 3 * 5 = 20 apples.",),
                     answer=None, terminal=False)
    before = embedded_backend.stats.score_calls
    values = SelfEvalCritic(embedded_backend)([nodes[1], wrong])
    assert embedded_backend.stats.score_calls == before + 1
    assert len(values) == 2 and all(0.0 < v < 1.0 for v in values)


def test_judge_real(embedded_backend) -> None:  # type: ignore[no-untyped-def]
    _, nodes = gsm8k_nodes(embedded_backend)
    critic = LLMJudgeCritic(embedded_backend, JudgeConfig(max_tokens=24))
    before = embedded_backend.stats.calls
    values = critic(nodes)
    assert embedded_backend.stats.calls == before + 1
    assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
    assert critic.stats.judged == 2 and critic.stats.parsed + critic.stats.unparseable == 2
    assert len(critic.last_rationales) == 2


def test_rollout_real_on_gsm8k(embedded_backend) -> None:  # type: ignore[no-untyped-def]
    """Evaluation mode: rollouts in one generate call, their final states self-evaluated in one score call."""
    env, nodes = gsm8k_nodes(embedded_backend, "none")
    critic = RolloutCritic(embedded_backend, env, SelfEvalCritic(embedded_backend), RolloutConfig(max_tokens=24))
    calls, scores = embedded_backend.stats.calls, embedded_backend.stats.score_calls
    values = critic(nodes)
    assert embedded_backend.stats.calls == calls + 1  # every rollout in one generate call
    assert embedded_backend.stats.score_calls == scores + 1  # one self-eval call on all final states
    assert len(values) == 2 and all(0.0 < v < 1.0 for v in values)
    assert critic.stats.rollouts == 2
    for node, final in zip(nodes, critic.last_final_states):
        assert final.steps[:len(node.steps)] == node.steps  # rollouts continue from the node
        assert final.task.answer is None  # evaluation: no gold anywhere

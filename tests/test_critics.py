"""Unit tests of critics/ with the scripted backend and a tiny in-file env."""

from __future__ import annotations

import math
from typing import Sequence

import pytest

from mcts_agent.critics import (ConstantCritic, Critic, CriticError, EnsembleCritic, JudgeConfig, LLMJudgeCritic, NodeView,
                     OutcomeVerifierCritic, RolloutConfig, RolloutCritic, SelfEvalConfig, SelfEvalCritic, Verdict,
                     VerifierConfig, make_critic, parse_ensemble_spec, parse_judgement)
from mcts_agent.envs.base import RewardMode, Task, TextEnv
from mcts_agent.errors import ConfigError
from mcts_agent.llm.scripted import ScriptedBackend


# ----- fixtures: a tiny env, node views, recording critics --------------------------------
class TinyEnv(TextEnv):
    """One step per line; a line 'Answer: X' ends the episode."""

    def messages(self, task: Task) -> list[dict[str, str]]:
        return [{"role": "user", "content": task.question}]

    def extract_answer(self, step: str) -> str | None:
        step = step.strip()
        return step[len("Answer:"):].strip() if step.startswith("Answer:") else None

    def verify(self, answer: str | None, task: Task) -> bool:
        return answer is not None and answer == task.answer


TASK = Task(id="t1", question="What is 2 + 3?", answer="5")


def make_env(mode: RewardMode = RewardMode.OUTCOME, max_steps: int = 4) -> TinyEnv:
    env = TinyEnv(max_steps=max_steps, reward_mode=mode)
    env.reset(options={"task": TASK})
    return env


def view(env: TextEnv, steps: Sequence[str] = (), backend: ScriptedBackend | None = None) -> NodeView:
    """The node reached by taking ``steps`` from a fresh episode of ``TASK``."""
    env.reset(options={"task": TASK})
    state, reward = env.snapshot(), None
    for s in steps:
        state, reward, *_ = env.transition(state, s)
    fmt = (backend or ScriptedBackend(lambda p, i: "")).format_chat
    return NodeView(prompt=env.policy_prompt(state, fmt), question=state.task.question, steps=state.steps,
                    answer=state.answer, terminal=state.terminated, reward=reward, state=state)


def plain(question: str = "Q?", steps: Sequence[str] = (), terminal: bool = False,
          reward: float | None = None, state: object = None) -> NodeView:
    return NodeView(prompt=question + "\n" + "".join(s + "\n" for s in steps), question=question, steps=tuple(steps),
                    answer=None, terminal=terminal, reward=reward, state=state)


class Recording(Critic):
    """Returns ``value`` (or a per-node function of it) and records every batch."""

    def __init__(self, value: float = 0.25, name: str = "rec") -> None:
        self.value, self.name, self.batches = value, name, []

    def evaluate(self, nodes: Sequence[NodeView]) -> list[float]:
        self.batches.append(list(nodes))
        return [self.value] * len(nodes)


def yes_if_good(prompt: str, cont: str) -> float:
    good = "good" in prompt
    if cont.strip() == "Yes":
        return -0.1 if good else -3.0
    return -3.0 if good else -0.1


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def calls(backend: ScriptedBackend) -> int:
    return len(backend.batches) + backend.stats.score_calls


# ----- the Critic contract ------------------------------------------------------------------
class Returns(Critic):
    def __init__(self, name: str, values: list[float]) -> None:
        self.name, self.values = name, values

    def evaluate(self, nodes: Sequence[NodeView]) -> list[float]:
        return self.values


def test_nan_value_is_a_clear_error() -> None:
    with pytest.raises(CriticError) as e:
        Returns("nan", [0.5, float("nan")])([plain(), plain()])
    assert str(e.value) == "critic 'nan' returned a non-finite value nan for node 1 of 2"


def test_wrong_count_is_a_clear_error() -> None:
    with pytest.raises(CriticError) as e:
        Returns("short", [0.5])([plain(), plain()])
    assert str(e.value) == "critic 'short' returned 1 values for 2 nodes"


def test_empty_batch_calls_nothing() -> None:
    backend = ScriptedBackend(lambda p, i: "Score: 5")
    for critic in (SelfEvalCritic(backend), LLMJudgeCritic(backend)):
        assert critic([]) == []
    assert calls(backend) == 0


def test_ensemble_member_error_propagates() -> None:
    ens = EnsembleCritic([(ConstantCritic(0.5), 1.0), (Returns("bad", [math.inf]), 1.0)])
    with pytest.raises(CriticError, match=r"critic 'bad' returned a non-finite value inf for node 0 of 1"):
        ens([plain()])


# ----- self-evaluation --------------------------------------------------------------------------
def test_self_eval_one_score_call_values_in_order() -> None:
    backend = ScriptedBackend(lambda p, i: "", score_fn=yes_if_good)
    nodes = [plain("good one"), plain("bad one"), plain("good two", ["x = 1"])]
    values = SelfEvalCritic(backend)(nodes)
    assert backend.stats.score_calls == 1 and backend.batches == []
    assert values == pytest.approx([sigmoid(2.9), sigmoid(-2.9), sigmoid(2.9)])
    assert all(0.0 <= v <= 1.0 for v in values)


def test_self_eval_scores_all_pairs_in_one_batch() -> None:
    seen: list[tuple[str, str]] = []
    backend = ScriptedBackend(lambda p, i: "", score_fn=lambda p, c: seen.append((p, c)) or -1.0)
    critic = SelfEvalCritic(backend)
    critic([plain("A?", ["a1"]), plain("B?", ["b1", "b2"])])
    assert [c for _, c in seen] == ["Yes", "No", "Yes", "No"]
    assert seen[0][0] == seen[1][0] and seen[0][0] != seen[2][0]
    prompt = seen[2][0]
    assert "Problem: B?" in prompt and "Step 1: b1\nStep 2: b2" in prompt
    assert "Is this reasoning correct so far? Answer Yes or No." in prompt
    assert prompt.endswith("\nAssistant: ")  # rendered by backend.format_chat


def test_self_eval_suffix_mode_and_variants() -> None:
    seen: list[tuple[str, str]] = []
    backend = ScriptedBackend(lambda p, i: "", score_fn=lambda p, c: seen.append((p, c)) or math.log(0.25))
    critic = SelfEvalCritic(backend, SelfEvalConfig(mode="suffix", positive=(" Yes", " yes")))
    node = plain("Q?", ["s1"])
    [value] = critic([node])
    assert backend.stats.score_calls == 1
    assert [c for _, c in seen] == [" Yes", " yes", " No"]
    assert seen[0][0] == node.prompt + critic.config.suffix
    assert value == pytest.approx(2 / 3)  # two equally likely yes-forms against one no


def test_self_eval_degenerate_scores() -> None:
    backend = ScriptedBackend(lambda p, i: "", score_fn=lambda p, c: -math.inf if c == "No" else -5.0)
    assert SelfEvalCritic(backend)([plain()]) == [1.0]
    backend = ScriptedBackend(lambda p, i: "", score_fn=lambda p, c: -math.inf)
    assert SelfEvalCritic(backend)([plain()]) == [0.5]
    backend = ScriptedBackend(lambda p, i: "", score_fn=lambda p, c: float("nan"))
    with pytest.raises(CriticError, match=r"backend.score returned \[nan, nan\] for node 0"):
        SelfEvalCritic(backend)([plain()])


def test_self_eval_few_shot_examples() -> None:
    backend = ScriptedBackend(lambda p, i: "")
    default = SelfEvalCritic(backend).prompt(plain("Q?"))
    assert "4 + 6 = 10 marbles.\n\nIs this reasoning correct so far? Answer Yes or No.\nAssistant: Yes\nUser:" in default
    assert "10 + 3 = 13 dollars left.\n\nIs this reasoning correct so far? Answer Yes or No.\nAssistant: No\nUser:" in default
    custom = SelfEvalCritic(backend, SelfEvalConfig(positive="Correct", negative="Wrong")).prompt(plain("Q?"))
    assert "Assistant: Correct\n" in custom and "Assistant: Wrong\n" in custom
    bare = SelfEvalCritic(backend, SelfEvalConfig(examples=(), system="Be strict.")).prompt(plain("Q?"))
    assert bare.startswith("System: Be strict.\nUser: Here is") and bare.count("User:") == 1
    with pytest.raises(ConfigError) as e:
        SelfEvalConfig(examples=(("Q", "not a tuple", True),))
    assert str(e.value) == ("SelfEvalConfig.examples[0] must be (question: str, steps: tuple[str, ...], reply: bool), "
                            "got ('Q', 'not a tuple', True)")


def test_self_eval_config_validation() -> None:
    with pytest.raises(ConfigError, match=r"mode must be one of \('chat', 'suffix', 'turn'\), got 'bogus'"):
        SelfEvalConfig(mode="bogus")
    with pytest.raises(ConfigError, match="share"):
        SelfEvalConfig(positive=("Yes",), negative=("Yes", "No"))
    with pytest.raises(ConfigError, match="must contain"):
        SelfEvalConfig(template="no placeholder")
    assert SelfEvalConfig(mode="suffix").positive == (" Yes",)


# ----- outcome verifier ----------------------------------------------------------------------------
def test_verifier_outcome_mode_uses_reward_at_terminals() -> None:
    env = make_env(RewardMode.OUTCOME)
    fallback = Recording(0.3)
    nodes = [view(env, ["x = 5", "Answer: 5"]), view(env, ["x = 5"]), view(env, ["Answer: 4"])]
    assert [n.reward for n in nodes] == [1.0, 0.0, 0.0]
    values = OutcomeVerifierCritic(fallback, reward_mode=env.reward_mode)(nodes)
    assert values == [1.0, 0.3, 0.0]
    assert len(fallback.batches) == 1 and fallback.batches[0] == [nodes[1]]


def test_verifier_never_sees_gold_in_evaluation() -> None:
    env = make_env(RewardMode.NONE)
    nodes = [view(env, ["Answer: 5"]), view(env, ["Answer: 4"]), view(env, ["x"])]
    assert all(n.state.task.answer is None for n in nodes)  # the env stripped gold
    assert [n.reward for n in nodes] == [0.0, 0.0, 0.0]  # rewards carry nothing
    fallback = Recording(0.7)
    values = OutcomeVerifierCritic(fallback, reward_mode=env.reward_mode)(nodes)
    assert values == [0.7, 0.7, 0.7]  # the right and the wrong answer look alike
    assert fallback.batches == [nodes]


class GoldTrap:
    """A state that fails the test if anything reads it."""

    def __getattr__(self, item: str) -> object:
        raise AssertionError(f"the verifier read state.{item}")


def test_verifier_reads_only_terminal_and_reward() -> None:
    critic = OutcomeVerifierCritic(reward_mode="outcome", config=VerifierConfig(prior=0.4))
    nodes = [plain(terminal=True, reward=1.0, state=GoldTrap()), plain(state=GoldTrap())]
    assert critic(nodes) == [1.0, 0.4]


def test_verifier_reward_range_and_errors() -> None:
    critic = OutcomeVerifierCritic(reward_mode=RewardMode.OUTCOME, config=VerifierConfig(reward_range=(-1.0, 1.0)))
    assert critic([plain(terminal=True, reward=-1.0), plain(terminal=True, reward=0.0)]) == [0.0, 0.5]
    with pytest.raises(CriticError) as e:
        OutcomeVerifierCritic(reward_mode="outcome")([plain(terminal=True, reward=2.0)])
    assert str(e.value) == ("critic 'verifier' got reward 2.0 at node 0; expected a number in [0.0, 1.0] "
                            "(set VerifierConfig.reward_range for other reward scales)")
    with pytest.raises(ConfigError, match=r"reward_mode must be one of \['none', 'outcome'\], got 'gold'"):
        OutcomeVerifierCritic(reward_mode="gold")
    with pytest.raises(TypeError):
        OutcomeVerifierCritic()  # type: ignore[call-arg]  # the mode is never guessed
    with pytest.raises(ConfigError, match="prior must be in"):
        VerifierConfig(prior=1.5)


# ----- rollout ----------------------------------------------------------------------------------
def test_rollout_outcome_one_generate_call() -> None:
    env = make_env(RewardMode.OUTCOME)
    backend = ScriptedBackend(lambda p, i: "y = 2 + 3\n\nAnswer: 5\nignored after the end")
    critic = RolloutCritic(backend, env, config=RolloutConfig(max_tokens=200))
    nodes = [view(env), view(env, ["x = 1"]), view(env, ["Answer: 4"])]  # the last one is already over
    values = critic(nodes)
    assert values == [1.0, 1.0, 0.0]
    assert calls(backend) == 1 and len(backend.batches[0]) == 2
    for req in backend.batches[0]:
        assert req.temperature == 0.0 and req.stop == () and req.max_tokens == 200 and req.n == 1
    assert backend.batches[0][1].prompt == env.policy_prompt(nodes[1].state, backend.format_chat)
    assert critic.last_final_states[1].steps == ("x = 1", "y = 2 + 3", "Answer: 5")
    assert critic.stats.finished == 2 and critic.stats.steps_replayed == 4


def test_rollout_evaluation_scores_final_states_with_inner() -> None:
    env = make_env(RewardMode.NONE)
    backend = ScriptedBackend(lambda p, i: "Answer: 5")
    inner = Recording(0.6)
    values = RolloutCritic(backend, env, inner)([view(env), view(env, ["x"])])
    assert values == [0.6, 0.6]
    assert len(backend.batches) == 1 and len(inner.batches) == 1
    finals = inner.batches[0]
    assert [f.steps for f in finals] == [("Answer: 5",), ("x", "Answer: 5")]
    assert all(f.terminal and f.answer == "5" and f.reward == 0.0 and f.state.task.answer is None for f in finals)


def test_rollout_cut_by_max_tokens_drops_partial_step() -> None:
    env = make_env(RewardMode.OUTCOME)
    backend = ScriptedBackend(lambda p, i: "a = 1\nAnswer: 5")
    critic = RolloutCritic(backend, env, config=RolloutConfig(max_tokens=9, unfinished_value=0.2))
    assert critic([view(env)]) == [0.2]
    assert critic.last_final_states[0].steps == ("a = 1",) and critic.stats.unfinished == 1
    inner = Recording(0.9)
    assert RolloutCritic(backend, env, inner, RolloutConfig(max_tokens=9))([view(env)]) == [0.9]


def test_rollout_truncated_by_step_budget_and_env_restored() -> None:
    env = make_env(RewardMode.OUTCOME, max_steps=2)
    backend = ScriptedBackend(lambda p, i: "a\nb\nc\nAnswer: 5")
    node = view(env, ["x"])
    before = env.snapshot()
    assert RolloutCritic(backend, env)([view(env)]) == [0.0]  # truncated: no answer, reward 0
    env.restore(node.state)
    RolloutCritic(backend, env)([node])
    assert env.snapshot() == node.state  # the caller's env state is left alone
    assert before.steps == ()  # transition() never moves the env's own episode


def test_rollout_errors() -> None:
    env = make_env(RewardMode.NONE)
    backend = ScriptedBackend(lambda p, i: "")
    with pytest.raises(ConfigError, match="needs an inner critic"):
        RolloutCritic(backend, env)
    with pytest.raises(CriticError) as e:
        RolloutCritic(backend, env, ConstantCritic())([plain()])
    assert str(e.value) == "critic 'rollout' needs NodeView.state (an EnvState) at node 0 of 1, got NoneType"
    with pytest.raises(ConfigError, match="max_tokens must be an int >= 1, got 0"):
        RolloutConfig(max_tokens=0)


# ----- LLM judge ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value, verdict", [
    ("The steps are right.\nScore: 8", 0.8, Verdict.OK),
    ("**Score:** 7/10", 0.7, Verdict.OK),
    ("score = 9.5", 0.95, Verdict.OK),
    ("The score is 3.", 0.3, Verdict.OK),
    ("Score: 4 out of 5", 0.8, Verdict.OK),
    ("Score: 2\nOn reflection... Score: 6", 0.6, Verdict.OK),
    ("I would rate it 6 out of 10", 0.6, Verdict.OK),
    ("Half the apples, 3/4 of the pears.", 0.5, Verdict.MISSING),
    ("Score: N", 0.5, Verdict.MISSING),
    ("Score: 15", 0.5, Verdict.OUT_OF_RANGE),
    ("Score: -2", 0.5, Verdict.OUT_OF_RANGE),
    ("", 0.5, Verdict.MISSING),
    ("\x00\ufffd%%%@@ )))", 0.5, Verdict.MISSING),
])
def test_parse_judgement(text: str, value: float, verdict: Verdict) -> None:
    j = parse_judgement(text)
    assert j.value == pytest.approx(value) and j.verdict is verdict


def test_parse_judgement_rationale() -> None:
    j = parse_judgement("  Step 1 adds correctly.\nScore: 9\n")
    assert j.rationale == "Step 1 adds correctly." and j.score == 9.0
    assert parse_judgement("no score here", default=0.1).value == 0.1


def test_judge_one_generate_call_stats_and_rationales() -> None:
    outputs = {"A": "Looks right.\nScore: 10", "B": "Wrong sum.\nScore: 1", "C": "hmm", "D": "Score: 11"}
    backend = ScriptedBackend(lambda p, i: next(v for k, v in outputs.items() if f"Problem: {k}?" in p))
    critic = LLMJudgeCritic(backend, JudgeConfig(default=0.3, max_tokens=50))
    values = critic([plain("A?", ["a"]), plain("B?"), plain("C?"), plain("D?")])
    assert values == pytest.approx([1.0, 0.1, 0.3, 0.3])
    assert calls(backend) == 1 and len(backend.batches[0]) == 4
    req = backend.batches[0][0]
    assert req.temperature == 0.0 and req.max_tokens == 50 and "Score: N" in req.prompt and "Step 1: a" in req.prompt
    assert critic.last_rationales == ["Looks right.", "Wrong sum.", "hmm", "Score: 11"]
    s = critic.stats
    assert (s.calls, s.judged, s.parsed, s.missing, s.out_of_range, s.unparseable) == (1, 4, 2, 1, 1, 2)


def test_judge_config_validation() -> None:
    with pytest.raises(ConfigError, match=r"JudgeConfig.default must be in \[0, 1\], got 2"):
        JudgeConfig(default=2)
    with pytest.raises(ConfigError, match="scale must be"):
        JudgeConfig(scale=0)


# ----- ensemble -----------------------------------------------------------------------------------
def test_ensemble_weighted_average_each_member_once() -> None:
    a, b, c = Recording(1.0, "a"), Recording(0.0, "b"), Recording(0.5, "a")
    ens = EnsembleCritic([(a, 3), (b, 1), (c, 0)])
    assert ens([plain(), plain()]) == [0.75, 0.75]
    assert len(a.batches) == 1 and len(b.batches) == 1 and c.batches == []  # weight 0: not called
    assert ens.last_scores == {"a": [1.0, 1.0], "b": [0.0, 0.0]} and ens.keys == ["a", "b", "a#2"]


def test_ensemble_of_model_critics_shares_nothing_but_stays_batched() -> None:
    backend = ScriptedBackend(lambda p, i: "Score: 6", score_fn=yes_if_good)
    ens = EnsembleCritic([(SelfEvalCritic(backend), 0.5), (LLMJudgeCritic(backend), 0.5)])
    values = ens([plain("good"), plain("bad")])
    assert values == pytest.approx([(sigmoid(2.9) + 0.6) / 2, (sigmoid(-2.9) + 0.6) / 2])
    assert backend.stats.score_calls == 1 and len(backend.batches) == 1


@pytest.mark.parametrize("members, message", [
    ([], "EnsembleCritic needs at least one (critic, weight) member, got none"),
    ([(ConstantCritic(), -1.0)], "EnsembleCritic weight of member 0 ('constant') must be a finite number >= 0, got -1.0"),
    ([(ConstantCritic(), float("nan"))], "EnsembleCritic weight of member 0 ('constant') must be a finite number >= 0, got nan"),
    ([(ConstantCritic(), 0), (ConstantCritic(), 0.0)], "EnsembleCritic weights must sum to more than 0, got [0, 0.0]"),
    ([("self-eval", 1.0)], "EnsembleCritic member 0 must be a (Critic, weight) pair, got ('self-eval', 1.0)"),
])
def test_ensemble_weight_validation(members: list, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        EnsembleCritic(members)
    assert str(e.value) == message


# ----- one backend call per batch, for every critic -------------------------------------------
O, N = RewardMode.OUTCOME, RewardMode.NONE


@pytest.mark.parametrize("name, mode, kwargs, expected_calls", [
    ("self-eval", N, {}, 1),
    ("judge", N, {}, 1),
    ("verifier", O, {"fallback": "self-eval"}, 1),
    ("verifier", N, {"fallback": "judge"}, 1),
    ("rollout", O, {"inner": None}, 1),  # outcome mode: rewards, no inner critic
    ("rollout", N, {}, 2),  # one generate for the rollouts + one score call for self-eval of the final states
    ("ensemble", O, {"spec": "self-eval:1,judge:1,verifier:1"}, 2),  # score + generate; verifier uses no model
    ("none", N, {}, 0),
])
def test_every_critic_batches_its_model_calls(name: str, mode: RewardMode, kwargs: dict, expected_calls: int) -> None:
    env = make_env(mode)
    backend = ScriptedBackend(lambda p, i: "Score: 7" if "Rate the partial" in p else "Answer: 5", score_fn=yes_if_good)
    nodes = [view(env, steps) for steps in ([], ["x = 1"], ["x = 2"], ["x = 3", "y = 4"], ["Answer: 5"])]
    critic = make_critic(name, backend, env, **kwargs)
    values = critic(nodes)
    assert len(values) == len(nodes) and all(0.0 <= v <= 1.0 for v in values)
    assert calls(backend) == expected_calls
    assert critic(nodes) == values  # deterministic, and still the same number of calls per batch
    assert calls(backend) == 2 * expected_calls


# ----- make_critic ---------------------------------------------------------------------------------
def test_make_critic_names() -> None:
    env = make_env(RewardMode.NONE)
    backend = ScriptedBackend(lambda p, i: "")
    assert isinstance(make_critic("self-eval", backend, env), SelfEvalCritic)
    assert isinstance(make_critic("judge", backend, env, max_tokens=32), LLMJudgeCritic)
    v = make_critic("verifier", backend, env)
    assert isinstance(v, OutcomeVerifierCritic) and v.reward_mode is RewardMode.NONE
    assert isinstance(v.fallback, ConstantCritic)
    r = make_critic("rollout", backend, env, max_tokens=64)
    assert isinstance(r, RolloutCritic) and isinstance(r.inner, SelfEvalCritic) and r.config.max_tokens == 64
    none = make_critic("none")
    assert isinstance(none, ConstantCritic) and none([plain()]) == [0.5]
    ens = make_critic("Self-Eval:0.5, verifier:0.5", backend, env)
    assert isinstance(ens, EnsembleCritic) and [w for _, w in ens.members] == [0.5, 0.5]
    assert parse_ensemble_spec("judge,none:2") == [("judge", 1.0), ("none", 2.0)]


def test_make_critic_errors() -> None:
    with pytest.raises(CriticError) as e:
        make_critic("oracle")
    assert str(e.value) == ("unknown critic 'oracle'; expected one of ['self-eval', 'verifier', 'rollout', 'judge', "
                            "'self-eval-turn', 'prm', 'value', 'ensemble', 'none'] or an ensemble spec like 'self-eval:0.5,verifier:0.5'")
    with pytest.raises(CriticError, match="critic 'self-eval' needs a backend"):
        make_critic("self-eval")
    with pytest.raises(CriticError, match="critic 'ensemble' needs spec="):
        make_critic("ensemble")
    with pytest.raises(CriticError, match=r"names unknown member 'ensemble'"):
        make_critic("ensemble:1,none:1")
    with pytest.raises(CriticError, match=r"gives 'none' the weight 'heavy'; expected a number"):
        make_critic("none:heavy")
    with pytest.raises(ConfigError, match=r"critic 'judge' got unknown options \['temprature'\]"):
        make_critic("judge", ScriptedBackend(lambda p, i: ""), temprature=0.5)
    with pytest.raises(CriticError, match="needs an env"):
        make_critic("verifier")
    with pytest.raises(ConfigError, match="weight of member 0"):
        make_critic("none:-1")

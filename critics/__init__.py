"""Critics score a whole batch of search nodes in one call; values are in [0, 1].

``make_critic(name, backend, env, **kwargs)`` builds one by its CLI name.
"""

from critics.base import Critic, NodeView, check_values
from critics.constant import ConstantCritic
from critics.ensemble import EnsembleCritic
from critics.factory import CRITICS, make_critic, parse_ensemble_spec
from critics.judge import JudgeConfig, Judgement, JudgeStats, LLMJudgeCritic, Verdict, parse_judgement
from critics.rollout import RolloutConfig, RolloutCritic, RolloutStats
from critics.self_eval import SelfEvalConfig, SelfEvalCritic
from critics.verifier import OutcomeVerifierCritic, VerifierConfig
from mcts_agent.errors import CriticError

__all__ = [
    "CRITICS", "ConstantCritic", "Critic", "CriticError", "EnsembleCritic", "JudgeConfig", "JudgeStats",
    "Judgement", "LLMJudgeCritic", "NodeView", "OutcomeVerifierCritic", "RolloutConfig", "RolloutCritic",
    "RolloutStats", "SelfEvalConfig", "SelfEvalCritic", "Verdict", "VerifierConfig", "check_values",
    "make_critic", "parse_ensemble_spec",
]

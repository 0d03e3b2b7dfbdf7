"""Critics score a whole batch of search nodes in one call; values are in [0, 1].

``make_critic(name, backend, env, **kwargs)`` builds one by its CLI name (trained critics:
``make_critic("prm", path=...)`` or ``"prm:PATH"``).
"""

from mcts_agent.critic import Critic, NodeView, check_values
from mcts_agent.critics.constant import ConstantCritic
from mcts_agent.critics.ensemble import EnsembleCritic
from mcts_agent.critics.factory import CRITICS, make_critic, parse_ensemble_spec
from mcts_agent.critics.judge import JudgeConfig, Judgement, JudgeStats, LLMJudgeCritic, Verdict, parse_judgement
from mcts_agent.critics.learned import LearnedCritic, PathFormat, PRMCritic, ValueCritic
from mcts_agent.critics.rollout import RolloutConfig, RolloutCritic, RolloutStats
from mcts_agent.critics.self_eval import SelfEvalConfig, SelfEvalCritic
from mcts_agent.critics.verifier import OutcomeVerifierCritic, VerifierConfig
from mcts_agent.errors import CriticError

__all__ = [
    "CRITICS", "ConstantCritic", "Critic", "CriticError", "EnsembleCritic", "JudgeConfig", "JudgeStats",
    "Judgement", "LearnedCritic", "LLMJudgeCritic", "NodeView", "OutcomeVerifierCritic", "PathFormat", "PRMCritic",
    "RolloutConfig", "RolloutCritic",
    "RolloutStats", "SelfEvalConfig", "SelfEvalCritic", "ValueCritic", "Verdict", "VerifierConfig", "check_values",
    "make_critic", "parse_ensemble_spec",
]

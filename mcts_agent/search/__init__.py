"""Batched tree search: MCTS and the baselines behind one planner."""

from mcts_agent.search.config import Algo, AnswerRule, SearchConfig, Selection
from mcts_agent.search.driver import Planner, RunStats, run_search

__all__ = ["Algo", "AnswerRule", "Planner", "RunStats", "SearchConfig", "Selection", "run_search"]

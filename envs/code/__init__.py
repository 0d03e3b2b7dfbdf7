"""Code environments (HumanEval, MBPP) and the sandbox that runs model-written code.

    from mcts_agent.envs.code import Sandbox, SandboxConfig, SandboxPool
    Sandbox(SandboxConfig(timeout_s=5)).run("assert 1 + 1 == 2").status  # Status.PASSED
"""

from mcts_agent.envs.code.pool import SandboxPool
from mcts_agent.envs.code.sandbox import (Sandbox, SandboxConfig, SandboxResult, SandboxUnavailableError, Status,
                                          VerdictSource)

__all__ = ["Sandbox", "SandboxConfig", "SandboxPool", "SandboxResult", "SandboxUnavailableError", "Status",
           "VerdictSource"]

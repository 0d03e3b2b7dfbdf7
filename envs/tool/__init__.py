"""Tool-use environments: BFCL (Berkeley Function Calling Leaderboard) on its own data and checkers."""

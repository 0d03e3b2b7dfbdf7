#!/usr/bin/env bash
# Quick start: set everything up, then run MCTS against greedy chain-of-thought on a small
# arithmetic benchmark with the embedded model, and write the tree viewer pages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/mcts-agent search --env math/reasoning-gym --limit 30 --algo greedy --algo mcts \
    --simulations 8 --branching 4 --max-steps 6 --out runs/demo "$@"
echo "tree viewer: runs/demo/mcts/viewer.html"

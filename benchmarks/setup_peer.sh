#!/usr/bin/env bash
# Create .venv-peer: llm-reasoners 1.0.2 for benchmarks/peer_llm_reasoners.py ONLY.
# It is not a project dependency and never enters .venv. Same torch / transformers as ours.
#
#   bash benchmarks/setup_peer.sh [VENV_DIR]        (default: .venv-peer at the repo root)
#
# llm-reasoners declares heavy dependencies (bitsandbytes, optimum, tarski, ...) that its
# MCTS + HFModel path never imports, so it goes in with --no-deps; then only what
# `import reasoners, reasoners.algorithm, reasoners.lm.hf_model` really needs:
# reasoners/lm/__init__.py imports every LM wrapper, hence openai, anthropic,
# google-generativeai, fairscale, scipy and peft.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-$root/.venv-peer}"
python="${PYTHON:-python3.11}"
pins=(torch==2.13.0 "transformers>=5.16.1,<5.20")

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
echo '*' > "$venv/.gitignore"   # keep the venv out of git status
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" "${pins[@]}" accelerate tqdm numpy
"${pip[@]}" --no-deps llm-reasoners==1.0.2
"${pip[@]}" "${pins[@]}" peft fairscale scipy openai anthropic google-generativeai
"$venv/bin/python" -W ignore -c "import reasoners, reasoners.algorithm, reasoners.lm.hf_model; print('llm-reasoners ready in $venv')"

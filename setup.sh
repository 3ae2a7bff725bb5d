#!/usr/bin/env bash
# Creates .venv and installs tlcr with every stage (tlcr[all]) and its dev tools.
# torch is installed first and pinned, so nothing later can pull a multi-GB CUDA build on a CPU machine.
# GPU users: TLCR_TORCH_SPEC="torch" ./setup.sh (or any pin matching your CUDA).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TLCR_TORCH_SPEC:-torch==2.13.0}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[all,dev]"
echo "tlcr installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"

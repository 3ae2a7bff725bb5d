#!/usr/bin/env bash
# GPU variant of benchmarks/service.py: bf16 on CUDA, a larger model (hidden 1024, 8 layers) and longer
# responses, one short run (about 3 minutes) for a lent device. Results: stdout and $OUT/service_gpu.json.
# Extra arguments go to benchmarks/service.py (e.g. --duration 5).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .venv ]; then . .venv/bin/activate; fi
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run benchmarks/service.py for CPU')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python benchmarks/service.py --device cuda --dtype bf16 --hidden 1024 --layers 8 --heads 16 --threads 4 \
  --repeat-response 4 --items-per-request 1 --clients 1,4,16,64 --rounds 2 --duration 5 \
  --out "${OUT:-.}/service_gpu.json" "$@"

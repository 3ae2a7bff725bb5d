"""Revisions per second of `tlcr label --reviser openai` against a local vLLM server (tiny model, CPU).

The full labelling pipeline (`label_pairs`: the openai client, tokenization, filters, append; no cache) asks
vLLM's OpenAI-compatible server (tests/support/vllm_server.py: a Llama of hidden 128, 4 heads, 2 layers, on
the controlled task's 512-token vocabulary, float32, its compute threads bound by VLLM_CPU_OMP_THREADS_BIND)
for `--pairs` revisions of `--max-tokens` tokens at each `--concurrency` level. Every run labels pairs no
earlier run saw (vLLM's prefix cache still shares the instruction's tokens, as it would in a real job); the
levels are interleaved over `--rounds` rounds after one warm-up run. The untrained model never writes the
revision marker, so every record is `failed`: the figure is answered requests per second, which is what a
trained reviser's revisions per second would be at the same prompt and answer lengths.

Run:  python benchmarks/labeling_vllm.py [--vllm-python PATH] [--pairs 64] [--max-tokens 32]
          [--levels 1,8,32] [--rounds 2] [--cpu-bind 0] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support


async def _label_run(pairs: list[Any], tokenizer: Any, base_url: str, model: str, concurrency: int,
                     max_tokens: int, workdir: Path) -> tuple[float, int, int, float]:
    """(wall seconds, answers, completion tokens, this process's CPU seconds) of one labelling run."""
    from tlcr.core.retry import RetryPolicy
    from tlcr.labeling.revisers import OpenAIReviser
    from tlcr.labeling.worker import WorkerConfig, label_pairs

    reviser = OpenAIReviser(model, api_key="benchmark", base_url=base_url, timeout_s=600,
                            retry=RetryPolicy(max_retries=0), max_tokens=max_tokens, concurrency=concurrency)
    config = WorkerConfig(out=workdir / "labels.jsonl", tokenizer_name="bench", concurrency=concurrency,
                          progress=False, workers=1)
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        result = await label_pairs(pairs, reviser, tokenizer, config)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        await reviser.aclose()
    usage = reviser.ledger.model(model)
    if result.written != len(pairs) or usage.answers != len(pairs):
        raise RuntimeError(f"benchmark run incomplete: {result.written} written, {usage.answers} answers")
    return elapsed, usage.answers, usage.completion_tokens, cpu


def main(argv: list[str] | None = None) -> int:
    from tests.support.vllm_server import VLLMServer, tiny_vllm_model, vllm_python
    from tlcr.core.data.controlled import ControlledTask
    from tlcr.core.models import load_tokenizer
    from tlcr.labeling.worker import run_event_loop

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm-python", type=Path, default=None,
                        help="python of vLLM's environment (default: $TLCR_VLLM_PYTHON or .venv-vllm/bin/python)")
    parser.add_argument("--pairs", type=int, default=64, help="pairs per run")
    parser.add_argument("--max-tokens", type=int, default=32, help="completion tokens per answer")
    parser.add_argument("--levels", default="1,8,32", help="--concurrency levels")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cpu-bind", default="0", help="VLLM_CPU_OMP_THREADS_BIND (e.g. 0, 0-1, all)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    python = args.vllm_python or vllm_python()
    if python is None:
        parser.error("no vLLM environment: pass --vllm-python, set TLCR_VLLM_PYTHON or run .ci/engines.sh vllm")
    levels = [int(x) for x in args.levels.split(",")]
    task = ControlledTask(seed=0)
    with tempfile.TemporaryDirectory(prefix="tlcr-label-vllm-") as tmp:
        root = Path(tmp)
        model = tiny_vllm_model(root / "model")
        tokenizer = load_tokenizer(model)
        server = VLLMServer(python, model, served_name="tiny", log_path=root / "vllm.log", cpu_bind=args.cpu_bind)
        with server:
            print(f"vLLM started in {server.startup_s:.0f} s (bound to cores {args.cpu_bind})", flush=True)
            runs = 0

            def run(concurrency: int) -> tuple[float, int, int, float]:
                nonlocal runs
                runs += 1
                pairs = task.pairs(args.pairs, seed=1000 + runs)  # pairs no earlier run saw
                return run_event_loop(_label_run(pairs, tokenizer, server.base_url, "tiny", concurrency,
                                                 args.max_tokens, root / f"run{runs}"))

            run(max(levels))  # warm-up: the first requests after start-up are slower
            results: dict[int, list[tuple[float, int, int, float]]] = {c: [] for c in levels}
            for _ in range(args.rounds):
                for concurrency in levels:
                    results[concurrency].append(run(concurrency))
    rows = []
    for concurrency, measured in results.items():
        rates = [answers / wall for wall, answers, _, _ in measured]
        tokens = [completion / wall for wall, _, completion, _ in measured]
        rows.append({"concurrency": concurrency, "revisions_per_s": statistics.median(rates),
                     "revisions_per_s_min": min(rates), "revisions_per_s_max": max(rates),
                     "completion_tokens_per_s": statistics.median(tokens),
                     "mean_completion_tokens": sum(m[2] for m in measured) / sum(m[1] for m in measured),
                     "client_cpu_ms_per_revision": 1000 * sum(m[3] for m in measured) / sum(m[1] for m in measured)})
    print(f"{args.pairs} pairs per run, --max-tokens {args.max_tokens}, {args.rounds} rounds; median (min-max)")
    print("concurrency  revisions/s            completion tokens/s  tokens/answer  client CPU ms/revision")
    for row in rows:
        print(f"{row['concurrency']:>11}  {row['revisions_per_s']:6.2f} ({row['revisions_per_s_min']:.2f}-"
              f"{row['revisions_per_s_max']:.2f})  {row['completion_tokens_per_s']:19.1f}  "
              f"{row['mean_completion_tokens']:13.1f}  {row['client_cpu_ms_per_revision']:21.2f}")
    base = rows[0]["revisions_per_s"]
    print("speed-up over concurrency " + str(rows[0]["concurrency"]) + ": "
          + ", ".join(f"c={r['concurrency']} {r['revisions_per_s'] / base:.2f}x" for r in rows))
    if args.json is not None:
        args.json.write_text(json.dumps({"pairs": args.pairs, "max_tokens": args.max_tokens, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

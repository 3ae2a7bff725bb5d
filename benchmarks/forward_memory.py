"""What keeping freed memory (`tlcr.core.allocator`, the service's `--keep-freed-memory`) does to a forward: packed
forwards timed, and their minor page faults counted, in fresh processes with glibc's default malloc and with
freed memory kept, alternated in one run.

    python benchmarks/forward_memory.py                  # benchmarks/service.py's checkpoint: hidden 256, 4 layers
    python benchmarks/forward_memory.py --hidden 512 --layers 8 --sizes 8,32

Each measurement is a fresh interpreter (malloc settings are process-wide) that loads the checkpoint as the service
does (packed), scores each batch size once to warm up, then scores batches of consecutive workload items for
--duration seconds per size. Printed: ms and minor page faults per batch, medians over --rounds, and kept / default.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # (this folder's service.py would hide it)


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """In this process: ms and minor page faults per batch for each size."""
    import torch

    from tlcr.core.allocator import keep_freed_memory
    from tlcr.service.scorer import Encoded, TokenScorer

    torch.set_num_threads(args.threads)
    if args.keep:
        assert keep_freed_memory(), "glibc's mallopt is unavailable here"
    items = json.loads(Path(args.items).read_text())
    encoded = [Encoded(i["prompt_token_ids"], i["response_token_ids"]) for i in items]
    scorer = TokenScorer.load(args.model, device="cpu", dtype="float32")
    scorer.enable_packing()
    out = {}
    for size in args.sizes:
        batches = [encoded[i:i + size] for i in range(0, len(encoded) - size + 1, size)]
        scorer.probabilities(batches[0])
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < args.duration:
            scorer.probabilities(batches[count % len(batches)])
            count += 1
        seconds = time.perf_counter() - started
        out[str(size)] = {"ms_per_batch": 1000 * seconds / count,
                          "faults_per_batch": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / count}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[8, 16, 64])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per batch size")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--items", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return

    import importlib.util

    # benchmarks/service.py: the same checkpoint and workload (loaded by path: its name is also tlcr's package's)
    spec = importlib.util.spec_from_file_location("tlcr_bench_service", HERE / "service.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # (its dataclasses look their module up)
    spec.loader.exec_module(bench)

    work = Path(tempfile.mkdtemp(prefix="tlcr-forward-memory-"))
    model = bench.build_discriminator(work, args.hidden, args.layers, args.heads, 512)
    items = work / "items.json"
    items.write_text(json.dumps(bench.workload(model, 512, 1)))
    print(f"model: hidden {args.hidden}, {args.layers} layers, packed, fp32, {args.threads} thread(s); batches of "
          f"{args.sizes} consecutive controlled-task items; {args.rounds} rounds, fresh processes alternated",
          flush=True)
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"default": [], "kept": []}
    for round_index in range(args.rounds):
        for name in ("default", "kept") if round_index % 2 == 0 else ("kept", "default"):
            command = [sys.executable, __file__, "--child", "--model", str(model), "--items", str(items),
                       "--sizes", ",".join(map(str, args.sizes)), "--threads", str(args.threads),
                       "--duration", str(args.duration)] + (["--keep"] if name == "kept" else [])
            done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"round {round_index + 1} done", flush=True)
    print("\n| sequences per batch | default ms | kept ms | kept / default | default faults | kept faults |")
    print("|---:|---:|---:|---:|---:|---:|")
    report: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k not in ("model", "items")},
                              "runs": runs, "medians": {}}
    for size in map(str, args.sizes):
        med = {name: {key: statistics.median(r[size][key] for r in runs[name])
                      for key in ("ms_per_batch", "faults_per_batch")} for name in runs}
        report["medians"][size] = med
        print(f"| {size} | {med['default']['ms_per_batch']:.1f} | {med['kept']['ms_per_batch']:.1f} | "
              f"{med['kept']['ms_per_batch'] / med['default']['ms_per_batch']:.2f} | "
              f"{med['default']['faults_per_batch']:,.0f} | {med['kept']['faults_per_batch']:,.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Does a long-running service get slower? Serve under steady load for --minutes and log the model forward
time per batch over time; then compare the soaked process with a fresh one side by side.

    python benchmarks/service_soak.py --minutes 30                 # hidden-512 × 8-layer Llama, 2 threads
    python benchmarks/service_soak.py --minutes 10 --plot soak.png --csv soak.csv

Load: --clients closed-loop clients, each sending --items-per-request items of the controlled task per
request (16 × 4: 64-sequence batches), without pause. Every --interval-s the service's Prometheus metrics
give, for that interval: forward batches, mean batch size, mean forward ms per batch and per 1,000 tokens
computed; /proc gives the process's resident memory, thread count and minor page faults per batch. The verdict
compares the mean forward time per 1,000 tokens of the last window with the first (window: 5 minutes, or a
third of a shorter run); the goal is <= 1.05.

Other work on the machine changes forward times too, so the time series alone cannot tell a slower process
from a busier machine: at the end a fresh service on the same checkpoint is started and the two are
measured alternately (--fresh-rounds rounds of --fresh-seconds each); their ratio is robust to the load.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import runpy
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
GOAL = 1.05


# benchmarks/service.py's checkpoint builder, workload and load generator (scripts are not packages)
bench = SimpleNamespace(**runpy.run_path(str(HERE / "service.py"), run_name="tlcr_bench_service"))
SUMS = ("tlcr_forward_seconds_sum", "tlcr_forward_seconds_count", "tlcr_batch_size_sum",
        "tlcr_batch_padded_tokens_sum")


def metric_sums(url: str) -> dict[str, float]:
    values = dict.fromkeys(SUMS, 0.0)
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        name = line.split("{", 1)[0]
        if name in values and 'model="discriminator"' in line:
            values[name] = float(line.split()[-1])
    return values


def minor_faults(pid: int) -> int:
    """Minor page faults of a process so far (Linux /proc): memory the allocator takes back from the kernel
    and touches again shows here, which a fragmenting heap would make grow per batch."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def process_status(pid: int) -> tuple[float, int]:
    """(resident MiB, threads) of a process (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


@dataclass
class Interval:
    minute: float  # since the soak started, at the interval's end
    batches: int
    mean_batch: float
    forward_ms: float  # per batch
    forward_ms_per_1k_tokens: float  # per 1,000 tokens computed (padding included)
    tokens_per_s: float  # items' tokens scored per second, as the clients saw it
    rss_mib: float
    threads: int
    load: float
    minor_faults_per_batch: float = 0.0


def measure(url: str, pid: int, bodies: list[tuple[bytes, int]], clients: int, seconds: float) -> dict[str, float]:
    before, faults_before = metric_sums(url), minor_faults(pid)
    sample = asyncio.run(bench.load_test(url, bodies, clients, seconds, 10**9, pid))
    after, faults = metric_sums(url), minor_faults(pid) - faults_before
    delta = {k: after[k] - before[k] for k in SUMS}
    batches = max(delta["tlcr_forward_seconds_count"], 1.0)
    return {"batches": delta["tlcr_forward_seconds_count"], "mean_batch": delta["tlcr_batch_size_sum"] / batches,
            "forward_ms": 1000 * delta["tlcr_forward_seconds_sum"] / batches,
            "forward_ms_per_1k": 1e6 * delta["tlcr_forward_seconds_sum"]
            / max(delta["tlcr_batch_padded_tokens_sum"], 1),
            "tokens_per_s": sample.tokens / sample.seconds, "errors": sample.errors,
            "minor_faults_per_batch": faults / batches}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tlcr.service.launcher import start_service

    work = Path(tempfile.mkdtemp(prefix="tlcr-soak-"))
    model = Path(args.model) if args.model else bench.build_discriminator(work, args.hidden, args.layers, args.heads,
                                                                         512)
    bodies = bench.request_bodies(bench.workload(model, 512, 1), args.items_per_request)
    server_args = ["--torch-threads", str(args.threads), "--log-level", "warning"]
    print(f"soak: {args.minutes:g} min, {args.clients} clients × {args.items_per_request} items, {args.threads} torch "
          f"threads, interval {args.interval_s:g} s; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    intervals: list[Interval] = []
    with start_service(model, extra_args=server_args, log_path=work / "soaked.log") as soaked:
        started = time.monotonic()
        while time.monotonic() - started < args.minutes * 60:
            m = measure(soaked.url, soaked.pid, bodies, args.clients, args.interval_s)
            rss, threads = process_status(soaked.pid)
            row = Interval(round((time.monotonic() - started) / 60, 2), int(m["batches"]), round(m["mean_batch"], 1),
                           round(m["forward_ms"], 2), round(m["forward_ms_per_1k"], 3), round(m["tokens_per_s"], 1),
                           round(rss, 1), threads, os.getloadavg()[0], round(m["minor_faults_per_batch"], 1))
            intervals.append(row)
            print(f"{row.minute:6.2f} min: {row.batches} batches of {row.mean_batch} seq, forward {row.forward_ms} ms "
                  f"({row.forward_ms_per_1k_tokens} ms / 1k tokens), {row.tokens_per_s:,.0f} tokens/s, RSS "
                  f"{row.rss_mib:.0f} MiB, {row.threads} threads, {row.minor_faults_per_batch:,.0f} minor page faults "
                  f"per batch, load {row.load:.1f}", flush=True)
        comparison: list[dict[str, float]] = []
        if args.fresh_rounds:
            with start_service(model, extra_args=server_args, log_path=work / "fresh.log") as fresh:
                measure(fresh.url, fresh.pid, bodies, args.clients, 2.0)  # its first batches: warm-up
                for r in range(args.fresh_rounds):
                    pair = [("soaked", soaked), ("fresh", fresh)]
                    result: dict[str, float] = {}
                    for name, service in pair if r % 2 == 0 else pair[::-1]:
                        m = measure(service.url, service.pid, bodies, args.clients, args.fresh_seconds)
                        result[name], result[f"{name}_faults_per_batch"] = m["forward_ms_per_1k"], \
                            m["minor_faults_per_batch"]
                    comparison.append(result)
                    print(f"side by side, round {r + 1}: forward ms / 1k tokens soaked {result['soaked']:.3f}, fresh "
                          f"{result['fresh']:.3f}; minor page faults per batch soaked "
                          f"{result['soaked_faults_per_batch']:,.0f}, fresh {result['fresh_faults_per_batch']:,.0f}",
                          flush=True)
    shutil.rmtree(work, ignore_errors=True)  # kept when the run fails: the services' logs are there
    return report(args, intervals, comparison)


def report(args: argparse.Namespace, intervals: list[Interval], comparison: list[dict[str, float]]) -> dict[str, Any]:
    window = min(5.0, args.minutes / 3)
    first = [i.forward_ms_per_1k_tokens for i in intervals if i.minute <= window]
    last = [i.forward_ms_per_1k_tokens for i in intervals if i.minute > intervals[-1].minute - window]
    drift = statistics.mean(last) / statistics.mean(first) if first and last else None
    side = statistics.median(c["soaked"] / c["fresh"] for c in comparison) if comparison else None
    print(f"\nlast {window:g} min / first {window:g} min, mean forward time per 1k tokens: "
          f"{'n/a' if drift is None else f'{drift:.3f}'} (goal <= {GOAL}; affected by other load on the machine)")
    if side is not None:
        print(f"soaked / fresh process, side by side (median of {len(comparison)} rounds): {side:.3f} "
              f"({'no slowdown beyond' if side <= GOAL else 'SLOWER than'} {GOAL}x)")
    result = {"settings": vars(args), "intervals": [asdict(i) for i in intervals], "last_over_first": drift,
              "side_by_side": comparison, "soaked_over_fresh": side}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(asdict(intervals[0])))
            writer.writeheader()
            writer.writerows(asdict(i) for i in intervals)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot([i.minute for i in intervals], [i.forward_ms for i in intervals], label="forward ms per batch")
        ax.set_xlabel("minutes of serving")
        ax.set_ylabel("ms per batch")
        twin = ax.twinx()
        twin.plot([i.minute for i in intervals], [i.load for i in intervals], color="grey", alpha=0.5,
                  label="machine load average")
        twin.set_ylabel("load average")
        fig.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(args.plot)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an existing discriminator checkpoint (default: build one)")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval-s", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--items-per-request", type=int, default=4)
    parser.add_argument("--fresh-rounds", type=int, default=4, help="soaked vs fresh rounds at the end (0: none)")
    parser.add_argument("--fresh-seconds", type=float, default=10.0)
    parser.add_argument("--out", help="JSON results")
    parser.add_argument("--csv", help="the time series as CSV")
    parser.add_argument("--plot", help="forward time per batch against time, as PNG (needs matplotlib)")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run(args)


if __name__ == "__main__":
    main()

"""The reward service on Ray Serve (`tlcr serve-ray`, local Ray on CPU) against direct `tlcr serve`, in one run.

    .venv-ray/bin/python benchmarks/ray_serve.py          # .ci/engines.sh ray builds .venv-ray

1. proxy overhead at 1 replica: direct `tlcr serve` and a 1-replica deployment, side by side (interleaved
   rounds), 16 closed-loop clients: p50 latency and throughput ratio (goal: Ray >= 0.8 x direct);
2. 2 replicas vs 1 (the 1-replica figures of step 1), 16 and 32 clients;
3. 32 clients for 60 s on 2 replicas: errors, and requests sent against requests the service counted
   (its /metrics, summed over replicas): none lost;
4. a replica killed (SIGKILL) in the middle of a stream from our client (retries on): failed requests, retries,
   and the time until Ray's replacement answers (first response naming a new replica in x-tlcr-replica).

Same checkpoint, workload (benchmarks/service.py's) and one torch thread per server process everywhere.
Every process started here is stopped at the end (tests.support.ray_serve stops each Ray it started).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
# OpenRLHF's wheel (in .venv-ray) installs a top-level package named `tests`, which would hide this
# repository's tests/ folder (a namespace package): bind the name to the folder first.
sys.modules["tests"] = types.ModuleType("tests")
sys.modules["tests"].__path__ = [str(ROOT / "tests")]  # type: ignore[attr-defined]

from benchmarks.service import (  # noqa: E402
    Connection,
    build_discriminator,
    load_test,
    process_cpu_seconds,
    request_bodies,
    summarize,
    workload,
)
from tests.support.ray_serve import RayServe, session_pids, start_ray_serve  # noqa: E402
from tlcr.service.client import AsyncTokenRewardClient  # noqa: E402
from tlcr.service.launcher import start_service  # noqa: E402
from tlcr.service.ray_app import REPLICA_HEADER  # noqa: E402

TARGET_PROXY = 0.8
SERVED = 'tlcr_requests_total{route="/token_rewards",status="200"}'


def served(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(SERVED + " "):
            return float(line.split()[-1])
    return 0.0


async def soak(url: str, bodies: list[tuple[bytes, int]], clients: int, seconds: float) -> dict[str, int]:
    """`clients` closed loops for `seconds`: every request sent is counted once, as answered 200 or failed."""
    counts = {"sent": 0, "ok": 0, "failed": 0}
    host, port = url.removeprefix("http://").rsplit(":", 1)
    deadline = time.monotonic() + seconds

    async def client(index: int) -> None:
        connection = Connection(host, int(port))
        position = index
        while time.monotonic() < deadline:
            counts["sent"] += 1
            try:
                status = await connection.post("/token_rewards", bodies[position % len(bodies)][0])
            except (OSError, asyncio.IncompleteReadError, ValueError):
                connection.close()
                status = -1
            counts["ok" if status == 200 else "failed"] += 1
            position += clients
        connection.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return counts


class CountRetries(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "retry" in record.getMessage()


async def kill_mid_stream(service: RayServe, items: list[dict[str, list[int]]], clients: int,
                          seconds: float) -> dict[str, Any]:
    """Our async client in `clients` loops; one replica SIGKILLed after 3 s; replacement timed by a probe."""
    retries = CountRetries()
    logging.getLogger("tlcr").addHandler(retries)
    counts = {"ok": 0, "failed": 0}
    deadline = time.monotonic() + seconds
    victim = service.replica_pids()[0]
    seen: set[str] = set()
    timing: dict[str, float] = {}

    async def stream(client: AsyncTokenRewardClient, index: int) -> None:
        position = index
        while time.monotonic() < deadline:
            try:
                await client.token_rewards([items[position % len(items)]])
                counts["ok"] += 1
            except Exception as exc:
                counts["failed"] += 1
                print(f"  failed: {type(exc).__name__}: {exc}", flush=True)
            position += clients

    async def probe() -> None:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            # Past the stream's end if need be, until the replacement answers (at most 5 minutes).
            while "replaced" not in timing and time.monotonic() < deadline + 300:
                try:
                    replica = (await http.get("/healthz")).headers.get(REPLICA_HEADER)
                except httpx.TransportError:
                    replica = None
                if replica and "killed" in timing and replica not in seen and "replaced" not in timing:
                    timing["replaced"] = time.monotonic() - timing["killed"]
                if replica and "killed" not in timing:
                    seen.add(replica)
                if "killed" in timing and "process" not in timing and set(service.replica_pids()) - before:
                    timing["process"] = time.monotonic() - timing["killed"]
                await asyncio.sleep(0.1)

    async def kill() -> None:
        await asyncio.sleep(3)
        os.kill(victim, 9)
        timing["killed"] = time.monotonic()
        print(f"  killed replica process {victim} after 3 s of the stream", flush=True)

    before = set(service.replica_pids())
    async with AsyncTokenRewardClient(service.url, timeout=60) as client:
        await asyncio.gather(*(stream(client, i) for i in range(clients)), probe(), kill())
    logging.getLogger("tlcr").removeHandler(retries)
    return {**counts, "retries": retries.count, "replica_seen_before_kill": len(seen),
            "replacement_process_s": timing.get("process"), "replacement_answers_s": timing.get("replaced")}


def cpu_seconds(pids: set[int]) -> float:
    return sum(process_cpu_seconds(pid) or 0.0 for pid in pids)


def measure(url: str, bodies: list[tuple[bytes, int]], clients: int, seconds: float, pids: set[int]) -> Any:
    """A closed-loop load test, plus the CPU time all of `pids` used during it (the whole system measured:
    for Ray Serve every process of its session: proxy, replica, controller, GCS, raylet...)."""
    before = cpu_seconds(pids)
    sample = asyncio.run(load_test(url, bodies, clients, seconds, 200_000))
    sample.cpu_seconds = cpu_seconds(pids) - before  # includes the 1 s warm-up: the same for every system
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--soak", type=float, default=60.0, help="seconds of the 32-client run")
    parser.add_argument("--kill-seconds", type=float, default=40.0, help="length of the stream with the kill")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = Path(tempfile.mkdtemp(prefix="tlcr-ray-bench-"))
    model = build_discriminator(work, args.hidden, args.layers, 4, 512)
    items = workload(model, 512, 1)
    bodies = request_bodies(items, 1)
    common = ["--torch-threads", "1", "--log-level", "warning"]
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; model hidden {args.hidden}, "
          f"{args.layers} layers, fp32, 1 torch thread per server process; {args.rounds} interleaved rounds of "
          f"{args.duration:g} s", flush=True)

    samples: dict[str, list[Any]] = {}
    direct = start_service(model, extra_args=common, ready_timeout=600, log_path=work / "direct.log")
    try:
        with start_ray_serve(model, work / "ray1.log", args=common, replicas=1) as ray1:
            for r in range(args.rounds):
                ray_pids = session_pids(ray1.process.pid)
                systems = [("direct", direct.url, {direct.pid}), ("ray x1", ray1.url, ray_pids)]
                for name, url, pids in systems if r % 2 == 0 else systems[::-1]:
                    samples.setdefault(f"{name} @16", []).append(measure(url, bodies, 16, args.duration, pids))
                samples.setdefault("ray x1 @32", []).append(measure(ray1.url, bodies, 32, args.duration, ray_pids))
                print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1].tokens / v[-1].seconds:,.0f} tok/s"
                                                     for k, v in samples.items()), flush=True)
    finally:
        direct.stop()
    with start_ray_serve(model, work / "ray2.log", args=common, replicas=2) as ray2:
        for _ in range(args.rounds):
            for clients in (16, 32):
                samples.setdefault(f"ray x2 @{clients}", []).append(
                    measure(ray2.url, bodies, clients, args.duration, session_pids(ray2.process.pid)))
        time.sleep(2.5)  # every replica has pushed its metrics since the last measurement
        before = served(ray2.url)
        counts = asyncio.run(soak(ray2.url, bodies, 32, args.soak))
        time.sleep(2.5)  # every replica has pushed its metrics since
        counted = served(ray2.url) - before
        killed = asyncio.run(kill_mid_stream(ray2, items, 16, args.kill_seconds))

    results = {k: summarize(k, None, v) for k, v in samples.items()}
    print("\n| system | clients | tokens/s (median of rounds) | p50 / p99 ms | errors | tokens per CPU-s |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, r in results.items():
        name, clients = key.split(" @")
        print(f"| {name} | {clients} | {r.tokens_per_s:,.0f} | {r.p50_ms:.1f} / {r.p99_ms:.1f} | {r.errors} | "
              f"{r.tokens_per_cpu_s:,.0f} |")
    d, one = results["direct @16"], results["ray x1 @16"]
    ratio = one.tokens_per_s / d.tokens_per_s
    print(f"\nproxy overhead at 1 replica, 16 clients: throughput Ray/direct {ratio:.2f} (goal >= {TARGET_PROXY}: "
          f"{'MET' if ratio >= TARGET_PROXY else 'NOT MET'}), p50 {one.p50_ms:.1f} ms vs {d.p50_ms:.1f} ms "
          f"(+{one.p50_ms - d.p50_ms:.1f} ms); per-round ratios "
          f"{[round(a / b, 2) for a, b in zip(one.tokens_per_s_rounds, d.tokens_per_s_rounds, strict=True)]}; "
          f"tokens per CPU-second Ray/direct {one.tokens_per_cpu_s / d.tokens_per_cpu_s:.2f}")
    for clients in (16, 32):
        two, single = results[f"ray x2 @{clients}"], results[f"ray x1 @{clients}"]
        print(f"2 replicas / 1 replica at {clients} clients: {two.tokens_per_s / single.tokens_per_s:.2f} "
              f"(p50 {two.p50_ms:.1f} vs {single.p50_ms:.1f} ms; measured one after the other)")
    lost = counts["ok"] - counted
    print(f"32 clients x {args.soak:g} s on 2 replicas: sent {counts['sent']}, answered 200 {counts['ok']}, failed "
          f"{counts['failed']}; the service counted {counted:.0f} answered: lost {lost:.0f}")
    print(f"replica killed mid-stream (16 clients, our client): {killed['ok']} ok, {killed['failed']} failed, "
          f"{killed['retries']} retries ({killed['replica_seen_before_kill']} replicas seen before the kill); "
          f"replacement process after {killed['replacement_process_s']} s, answering "
          f"after {killed['replacement_answers_s']} s")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

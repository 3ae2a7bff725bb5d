"""Worst-case requests at the service's size limits while a client polls /healthz: does anything block the
event loop or balloon memory?

    python benchmarks/hostile.py                 # CPU, tiny Llama discriminator (as benchmarks/service.py)
    python benchmarks/hostile.py --rounds 1 --max-body-bytes 1000000   # a quick run

One real service (subprocess on loopback, default limits unless given) is started; a poller in its own
process sends GET /healthz every 20 ms on its own connection during the whole run; a sampler reads the
server's RSS every 10 ms. Each attack below is sent by `--parallel` clients at once, `--rounds` times.
Printed: each attack's statuses, time, RSS peak and slowest /healthz answer; /healthz p50 / p99 / max
latency over the run, and the server's peak RSS growth over its RSS after warm-up. Goals: /healthz p99
<= 100 ms and peak RSS growth <= 300 MB; the exit code is 0 when both hold and every attack was answered
with its expected status.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib.util
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

# Run as a script, this file's folder comes first on sys.path, where its own name would hide the
# `service` package it measures.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

GOAL_P99_MS = 100.0
GOAL_RSS_MB = 300.0
PROMPT = "\n\nHuman: Tell me about the sea.\n\nAssistant:"


@dataclass
class Attack:
    name: str
    path: str
    body: Callable[[], bytes]  # built once, lazily (some are megabytes)
    expected: int | Callable[[bytes], int]  # the status, or a function of the body giving it
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})

    def expected_status(self, body: bytes) -> int:
        return self.expected(body) if callable(self.expected) else self.expected


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _fill_json(limit: int, unit: bytes, head: bytes, tail: bytes) -> bytes:
    """head + unit × n + tail, the largest n under `limit` bytes (units joined by commas)."""
    count = max(1, (limit - len(head) - len(tail)) // (len(unit) + 1))
    return head + b",".join([unit] * count) + tail


def attacks(limit: int, max_items: int, max_length: int, max_offsets: int, response_chars: int,
            max_json_values: int) -> list[Attack]:
    """Each kind of hostile or worst-case request of issue 15, at the size limits."""
    from tlcr.service.app import BIG_BODY_BYTES
    from tlcr.service.guards import json_value_count

    fits = "sea " * (response_chars // 4)  # a response that fits in max_length tokens

    def counted(status: int) -> Callable[[bytes], int]:
        """413 when the service counts too many JSON values in the body (before parsing), else `status`."""
        return lambda body: 413 if len(body) > BIG_BODY_BYTES and json_value_count(body) > max_json_values \
            else status

    return [
        Attack("lone surrogate in text", "/token_rewards",
               lambda: b'{"items":[{"prompt":"a","response":"x\\ud800"}]}', 422),
        Attack("lone surrogate, /get_reward", "/get_reward", lambda: b'{"query":["\\ud800"],"prompts":[""]}', 422),
        Attack("offsets at the body limit", "/token_rewards", lambda: _fill_json(
            limit, b"[0,1]", b'{"items":[{"prompt":"a","response":"xy","response_offsets":[', b"]}]}"), counted(422)),
        Attack(f"{max_offsets} offsets each covering the whole response", "/token_rewards",
               lambda: _json({"items": [{"prompt": PROMPT, "response": fits,
                                         "response_offsets": [[0, len(fits)]] * max_offsets}]}), 200),
        Attack("response text at the body limit", "/token_rewards",
               lambda: _json({"items": [{"prompt": "", "response": "y" * (limit - 100)}]}), 422),
        Attack("query text at the body limit, /get_reward", "/get_reward",
               lambda: _json({"query": ["q" * (limit - 100)], "prompts": [""]}), 422),
        Attack("many long items, return_tokens", "/token_rewards",
               lambda: _json({"items": [{"prompt": PROMPT, "response": fits}] * max_items, "return_tokens": True}),
               200),
        Attack("max_length token ids × max items", "/token_rewards", lambda: _json({"items": [
            {"prompt_token_ids": [5] * (max_length // 2), "response_token_ids": [6] * (max_length // 2)}] * max_items}),
            200),
        Attack("token ids at the body limit", "/token_rewards", lambda: _fill_json(
            limit, b"7", b'{"items":[{"prompt_token_ids":[1],"response_token_ids":[', b"]}]}"), counted(422)),
        Attack("invalid UTF-8 at the body limit", "/token_rewards",
               lambda: b'{"items":[{"prompt":"' + b"\xff" * (limit - 100) + b'","response":"x"}]}', 400),
        Attack("deep nesting", "/token_rewards", lambda: b"[" * (limit // 2) + b"]" * (limit // 2), 400),
        Attack("huge integer", "/token_rewards",
               lambda: b'{"items":[{"prompt_token_ids":[' + b"9" * (limit - 100) + b'],"response_token_ids":[1]}]}',
               400),
        Attack("gzip bomb", "/token_rewards", lambda: gzip.compress(b" " * (100 * limit)), 415,
               {"Content-Type": "application/json", "Content-Encoding": "gzip"}),
        Attack("body over the limit", "/token_rewards", lambda: b" " * (limit + 1), 413),
    ]


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.recent_peak = 0  # over the run; since the last `take_recent_peak`
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            try:
                rss = self.process.memory_info().rss
            except psutil.Error:
                return
            self.peak, self.recent_peak = max(self.peak, rss), max(self.recent_peak, rss)
            time.sleep(0.01)

    def take_recent_peak(self) -> int:
        peak, self.recent_peak = self.recent_peak, 0
        return peak


def poll_healthz(url: str, stop: Any, results: Any) -> None:
    """In its own process (so the attack client's own work never delays a poll): GET /healthz every 20 ms;
    sends back [(time.time() at the answer, latency s)]."""
    polls: list[tuple[float, float]] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            response = client.get("/healthz")
            polls.append((time.time(), time.perf_counter() - started))
            if response.status_code != 200:
                polls.append((time.time(), float("inf")))
            time.sleep(0.02)
    results.send(polls)


async def run_attacks(url: str, chosen: list[Attack], parallel: int, rounds: int, sampler: RssSampler,
                      baseline: int) -> tuple[list[tuple[Attack, int, list[int], float]], list[float]]:
    """(attack, expected status, statuses, seconds) of each attack, and every /healthz latency (s) meanwhile."""
    stop = multiprocessing.Event()
    receiver, sender = multiprocessing.Pipe(duplex=False)
    poller = multiprocessing.Process(target=poll_healthz, args=(url, stop, sender), daemon=True)
    poller.start()
    await asyncio.sleep(0.5)
    windows: list[tuple[float, float]] = []
    results = []
    limits = httpx.Limits(max_connections=parallel)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        for attack in chosen:
            body = attack.body()
            expected = attack.expected_status(body)
            sampler.take_recent_peak()
            window_start = time.time()
            started = time.perf_counter()
            statuses: list[int] = []
            for _ in range(rounds):
                responses = await asyncio.gather(*(client.post(attack.path, content=body, headers=attack.headers)
                                                   for _ in range(parallel)))
                statuses += [r.status_code for r in responses]
            results.append((attack, expected, statuses, time.perf_counter() - started))
            await asyncio.sleep(0.5)  # polls answered just after the last response still count for it
            windows.append((window_start, time.time()))
            growth = (sampler.take_recent_peak() - baseline) / 2**20
            print(f"  {attack.name:<48} {len(body) / 1e6:5.2f} MB  statuses {sorted(set(statuses))} "
                  f"(expected {expected})  {results[-1][3]:6.2f} s; RSS peak +{growth:.0f} MB", flush=True)
    stop.set()
    polls: list[tuple[float, float]] = receiver.recv()
    poller.join()
    print("  /healthz max per attack (answered within its time + 0.5 s): " + "; ".join(
        f"{attack.name.split(' (')[0]} {max([lat for t, lat in polls if a <= t <= b] or [0.0]) * 1000:.0f} ms"
        for (attack, _, _, _), (a, b) in zip(results, windows, strict=True)))
    return results, [lat for _, lat in polls]


def _build_discriminator(out: Path, max_length: int) -> Path:
    spec = importlib.util.spec_from_file_location("benchmark_service", Path(__file__).with_name("service.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return Path(module.build_discriminator(out, hidden=64, layers=2, heads=2, max_length=max_length))


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from tlcr.service.launcher import start_service

    work = Path(tempfile.mkdtemp(prefix="tlcr-hostile-"))
    model = Path(args.model) if args.model else _build_discriminator(work, args.max_length)
    server_args = ["--torch-threads", "1", "--log-level", "warning", "--max-body-bytes", str(args.max_body_bytes),
                   "--max-items-per-request", str(args.max_items), "--max-offsets-per-item", str(args.max_offsets),
                   "--max-json-values", str(args.max_json_values)]
    if args.model is None:
        server_args += ["--max-length", str(args.max_length)]
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start (other work on the "
          "machine shows up in every latency below)")
    with start_service(model, extra_args=server_args, ready_timeout=600, log_path=work / "server.log") as server:
        info = httpx.get(server.url + "/info").json()
        max_length = int(info["max_length"])
        # A response that fits: max_length / 2 characters of "sea " repeated (the built tokenizer splits
        # "sea " into up to 3 tokens), leaving room for the prompt.
        response_chars = max_length // 2
        warm = _json({"items": [{"prompt": PROMPT, "response": "sea " * (response_chars // 4)}] * 4})
        for _ in range(3):
            warmed = httpx.post(server.url + "/token_rewards", content=warm, timeout=120,
                                headers={"Content-Type": "application/json"})
            if warmed.status_code != 200:
                raise RuntimeError(f"warm-up request failed: {warmed.status_code} {warmed.text[:500]}")
        baseline = psutil.Process(server.pid).memory_info().rss
        sampler = RssSampler(server.pid)
        sampler.start()
        chosen = [a for a in attacks(args.max_body_bytes, args.max_items, max_length, args.max_offsets,
                                     response_chars, args.max_json_values)
                  if not args.only or any(w in a.name for w in args.only)]
        print(f"service: max_length {max_length}, max body {args.max_body_bytes:,} bytes, "
              f"{args.max_items} items, {args.max_offsets} offsets per item; {args.parallel} parallel clients × "
              f"{args.rounds} rounds per attack; RSS after warm-up {baseline / 2**20:.0f} MB")
        results, latencies = asyncio.run(run_attacks(server.url, chosen, args.parallel, args.rounds, sampler,
                                                     baseline))
        sampler.stop = True
        sampler.join()
        alive = httpx.get(server.url + "/readyz").status_code == 200
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    growth_mb = (sampler.peak - baseline) / 2**20
    wrong = [(a.name, s) for a, expected, s, _ in results if set(s) != {expected}]
    print(f"\n/healthz during the attacks: {len(ms)} polls, p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, "
          f"max {ms[-1]:.1f} ms (goal p99 <= {GOAL_P99_MS:.0f} ms: {'MET' if p99 <= GOAL_P99_MS else 'NOT MET'})")
    print(f"server peak RSS growth over warm-up: {growth_mb:.0f} MB (goal <= {GOAL_RSS_MB:.0f} MB: "
          f"{'MET' if growth_mb <= GOAL_RSS_MB else 'NOT MET'}); ready after the attacks: {alive}")
    print(f"unexpected statuses: {wrong or 'none'}; load average at end {os.getloadavg()[0]:.1f}")
    return {"healthz_p99_ms": p99, "healthz_max_ms": ms[-1], "polls": len(ms), "rss_growth_mb": growth_mb,
            "unexpected": wrong, "ready_after": alive,
            "met": p99 <= GOAL_P99_MS and growth_mb <= GOAL_RSS_MB and not wrong and alive}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Discriminator checkpoint (default: a tiny Llama built here).")
    parser.add_argument("--max-length", type=int, default=1024, help="max_length of the built discriminator.")
    parser.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024, help="The service's body limit.")
    parser.add_argument("--max-items", type=int, default=256)
    parser.add_argument("--max-offsets", type=int, default=16_384)
    parser.add_argument("--max-json-values", type=int, default=1_000_000)
    parser.add_argument("--parallel", type=int, default=4, help="Clients sending each attack at once.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, help="Also write the results here (JSON).")
    parser.add_argument("--only", nargs="*", help="Run only the attacks whose name contains one of these.")
    args = parser.parse_args()
    report = run_benchmark(args)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    sys.exit(0 if report["met"] else 1)


if __name__ == "__main__":
    main()

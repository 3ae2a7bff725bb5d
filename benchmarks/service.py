"""Reward-service throughput, side by side in one run: in-process batched forward (the limit), our server
(dynamic batching) and a naive server (one forward per request), under 1/4/16/64 concurrent clients.

    python benchmarks/service.py                          # CPU, tiny Llama (hidden 256, 4 layers)
    python benchmarks/service.py --device cuda --dtype bf16 --hidden 1024 --layers 8   # see service_gpu.sh

Every number comes from this run on this machine: the same checkpoint, workload, device, dtype and torch
thread count for all three. Clients are asyncio loops in this process sending POST /token_rewards over
loopback, each waiting for its answer before sending the next (closed loop), for a fixed time. Tokens
counted = prompt + response tokens forwarded. Goals (issue 22): at 16 clients ours >= 0.9 x in-process,
at 1 client ours >= 1.0 x naive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

# Run as a script, this file's folder comes first on sys.path, where its own name would hide the
# `service` package it measures.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from tlcr.service.schemas import TokenRewardResult, TokenRewardsRequest, TokenRewardsResponse  # noqa: E402

GOAL_IN_PROCESS_16, GOAL_NAIVE_1 = 0.9, 1.0  # issue 22: what a request may cost outside the forward
# In-process batches no larger than the items N clients have in flight: the limit for that closed loop (the full
# batches of the limit above need more clients than N).
IN_FLIGHT = "in-process, batches of the items in flight"
OURS_PROCESS = "ours, forward process"  # --compare-forward-process: our server with `--forward-process`


# --- the naive server (runs as a subprocess: `service.py naive-server ...`) -------------------------

def naive_server(args: argparse.Namespace) -> None:
    """Same contract, same model and threads; each request's items go through their own forward.

    Forwards run one at a time (a lock), as they would on one accelerator; they run in FastAPI's worker
    threads (a plain `def` route), so the event loop stays free like in our server.
    """
    import torch
    import uvicorn
    from fastapi import FastAPI

    from tlcr.core.allocator import keep_freed_memory
    from tlcr.service.rewards import rewards_from_probabilities
    from tlcr.service.scorer import Encoded, TokenScorer

    torch.set_num_threads(args.threads)
    if args.keep_freed_memory:  # as our server does
        keep_freed_memory()
    scorer = TokenScorer.load(args.model, device=args.device, dtype=args.dtype)
    if args.packing:  # the same forward as our server's
        scorer.enable_packing()
    scorer.warm_up()
    lock = threading.Lock()
    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/token_rewards")
    def token_rewards(request: TokenRewardsRequest) -> TokenRewardsResponse:
        batch = [Encoded(list(i.prompt_token_ids or []), list(i.response_token_ids or [])) for i in request.items]
        with lock:
            probabilities = scorer.probabilities(batch)
        return TokenRewardsResponse(model=scorer.name, mode=request.mode, results=[
            TokenRewardResult(rewards=rewards_from_probabilities(p, request.mode, request.threshold).tolist())
            for p in probabilities])

    # sockets= rather than uvicorn's fd option (which treats the socket as AF_UNIX: no TCP_NODELAY).
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[socket.socket(fileno=args.fd)])


def start_naive_server(args: argparse.Namespace, model: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    command = [sys.executable, __file__, "naive-server", "--model", str(model), "--fd", str(sock.fileno()),
               "--threads", str(args.threads), "--dtype", args.dtype] + ([] if args.packing else ["--no-packing"]) + (
                   [] if args.keep_freed_memory else ["--no-keep-freed-memory"])
    if args.device:
        command += ["--device", args.device]
    with log.open("ab") as out:
        process = subprocess.Popen(command, pass_fds=(sock.fileno(),), stdout=out, stderr=subprocess.STDOUT)
    sock.close()
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(process, url + "/readyz", "naive server", log, 300)
    return process, url


def wait_until_ready(process: subprocess.Popen[bytes], ready_url: str, what: str, log: Path, timeout: float) -> None:
    """Until GET `ready_url` answers 200; RuntimeError naming `log` if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see {log}")
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{what} not ready after {timeout:g} s; see {log}")
        time.sleep(0.2)


# --- model and workload ------------------------------------------------------------------------------

def build_discriminator(out: Path, hidden: int, layers: int, heads: int, max_length: int) -> Path:
    """A token-classifier checkpoint like a trained discriminator (random weights: speed is what counts)."""
    from tlcr.core.data.controlled import ControlledTask
    from tlcr.core.models import build_tiny_model, load_token_classifier, load_tokenizer, mark_discriminator_config

    base = build_tiny_model(ControlledTask(seed=0).corpus(), out / "base", vocab_size=1024, hidden_size=hidden,
                            num_layers=layers, num_heads=heads, max_positions=max_length)
    model = load_token_classifier(base, num_labels=1, device="cpu", dtype="float32")
    mark_discriminator_config(model.config, max_length=max_length, base_model=str(base))
    model.save_pretrained(out / "discriminator")
    load_tokenizer(base).save_pretrained(out / "discriminator")
    return out / "discriminator"


def workload(model: Path, count: int, repeat_response: int) -> list[dict[str, list[int]]]:
    """(prompt ids, rejected-response ids) of the controlled task's pairs, the project's offline default.

    `repeat_response` > 1 lengthens responses (the response text repeated) for longer-sequence runs.
    """
    from tlcr.core.data.controlled import ControlledTask
    from tlcr.core.models import encode_prompt_response, load_tokenizer

    tokenizer = load_tokenizer(model)
    items = []
    for pair in ControlledTask(seed=0).pairs(count, seed=1):
        prompt_ids, response_ids = encode_prompt_response(tokenizer, pair.prompt, pair.rejected * repeat_response)
        items.append({"prompt_token_ids": prompt_ids, "response_token_ids": response_ids})
    return items


def item_tokens(item: dict[str, list[int]]) -> int:
    return len(item["prompt_token_ids"]) + len(item["response_token_ids"])


# --- measurements ------------------------------------------------------------------------------------

def batch_counters(url: str) -> tuple[float, float]:
    """(sum of batch sizes, number of batches) from our server's Prometheus metrics."""
    values = {}
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        for key in ("tlcr_batch_size_sum", "tlcr_batch_size_count"):
            if line.startswith(key + '{model="discriminator"}'):
                values[key] = float(line.split()[-1])
    return values.get("tlcr_batch_size_sum", 0.0), values.get("tlcr_batch_size_count", 0.0)


@dataclass
class Sample:
    """One timed measurement."""

    tokens: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    batches: tuple[float, float] = (0.0, 0.0)  # (sum of batch sizes, number of batches): ours only
    cpu_seconds: float | None = None  # CPU time the measured system used (all its threads and child processes)
    loop_cpu_seconds: float | None = None  # of that, its main thread: the event loop (HTTP, validation, hand-off)


@dataclass
class Result:
    """Summary over rounds: median throughput, latency percentiles over all requests of all rounds."""

    system: str
    clients: int | None
    tokens_per_s: float
    tokens_per_s_rounds: list[float]
    tokens_per_cpu_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    errors: int = 0
    mean_batch_size: float | None = None
    loop_cpu_ms_per_request: float | None = None  # the server's event-loop thread
    rest_cpu_ms_per_request: float | None = None  # its other threads (forward, workers) and processes


def summarize(system: str, clients: int | None, samples: list[Sample]) -> Result:
    rates = [s.tokens / s.seconds for s in samples]
    latencies = sorted(x for s in samples for x in s.latencies)

    def quantile(q: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else None

    batch_sum, batch_count = (sum(s.batches[i] for s in samples) for i in (0, 1))
    per_cpu = [s.tokens / s.cpu_seconds for s in samples if s.cpu_seconds]
    loop_ms, rest_ms = [], []  # CPU ms per answered request: the event-loop thread, and everything else
    for s in samples:
        if s.latencies and s.cpu_seconds is not None and s.loop_cpu_seconds is not None:
            loop_ms.append(1000 * s.loop_cpu_seconds / len(s.latencies))
            rest_ms.append(1000 * (s.cpu_seconds - s.loop_cpu_seconds) / len(s.latencies))
    return Result(system, clients, statistics.median(rates), rates,
                  statistics.median(per_cpu) if per_cpu else None, quantile(0.5), quantile(0.99), len(latencies),
                  sum(s.errors for s in samples), batch_sum / batch_count if batch_count else None,
                  statistics.median(loop_ms) if loop_ms else None, statistics.median(rest_ms) if rest_ms else None)


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, all threads (Linux /proc; None elsewhere)."""
    return _stat_cpu_seconds(f"/proc/{pid}/stat")


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of `pid` and all its descendants: our forward process, vLLM's engine core and workers
    (Linux /proc; None elsewhere)."""
    total = process_cpu_seconds(pid)
    if total is None:
        return None
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    pending = list(parents.get(pid, []))
    while pending:
        child = pending.pop()
        total += process_cpu_seconds(child) or 0.0
        pending.extend(parents.get(child, []))
    return total


def main_thread_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process's main thread, where uvicorn runs the event loop (Linux /proc)."""
    return _stat_cpu_seconds(f"/proc/{pid}/task/{pid}/stat")


def _stat_cpu_seconds(path: str) -> float | None:
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class InProcess:
    """The model in this process, fed batches built exactly as the server's batcher builds them
    (the limit), or one forward per request's items (the ceiling of a server that does not batch
    across requests)."""

    def __init__(self, model: Path, items: list[dict[str, list[int]]], args: argparse.Namespace) -> None:
        import torch

        from tlcr.core.allocator import keep_freed_memory
        from tlcr.service.batcher import select_batch
        from tlcr.service.scorer import Encoded, TokenScorer

        torch.set_num_threads(args.threads)
        if args.keep_freed_memory:  # as our server does
            keep_freed_memory()
        self.torch = torch
        self.scorer = TokenScorer.load(str(model), device=args.device, dtype=args.dtype)
        if args.packing:  # the same forward as our server's
            self.scorer.enable_packing()
        self.scorer.warm_up()
        self.encoded = [Encoded(i["prompt_token_ids"], i["response_token_ids"]) for i in items]
        per_request = args.items_per_request
        self.unbatched = [self.encoded[i:i + per_request] for i in range(0, len(self.encoded), per_request)]
        self.batched = []
        pending = list(range(len(self.encoded)))
        while pending:
            chosen = select_batch([self.encoded[i].length for i in pending], 0, args.token_budget,
                                  args.max_batch_size)
            self.batched.append([self.encoded[pending[i]] for i in chosen])
            chosen_set = set(chosen)
            pending = [p for k, p in enumerate(pending) if k not in chosen_set]
        self._warm(self.batched)
        self._in_flight: dict[int, list[list[Any]]] = {}

    def _warm(self, batches: list[list[Any]]) -> None:
        for batch in batches:  # every shape once
            self.scorer.probabilities(batch)

    def in_flight(self, items: int) -> list[list[Any]]:
        """Batches of `items` consecutive items: the most a closed loop with that many items in flight can offer the
        batcher (requests arrive in workload order; it cannot pick similar lengths from the whole workload)."""
        if items not in self._in_flight:
            self._in_flight[items] = [self.encoded[i:i + items] for i in range(0, len(self.encoded), items)]
            self._warm(self._in_flight[items])
        return self._in_flight[items]

    def measure(self, batches: list[list[Any]], seconds: float) -> Sample:
        """Forward the batches round-robin for `seconds`."""
        tokens, started, cpu_started, i = 0, time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - started < seconds:
            batch = batches[i % len(batches)]
            self.scorer.probabilities(batch)  # returns numpy arrays: already synchronized with the device
            tokens += sum(e.length for e in batch)
            i += 1
        return Sample(tokens, time.perf_counter() - started, cpu_seconds=time.process_time() - cpu_started)


def request_bodies(items: list[dict[str, list[int]]], items_per_request: int) -> list[tuple[bytes, int]]:
    """(JSON body, tokens in it) per request, encoded once so the load generator spends little CPU."""
    bodies = []
    for start in range(len(items)):
        chosen = [items[(start + k) % len(items)] for k in range(items_per_request)]
        bodies.append((json.dumps({"items": chosen}).encode(), sum(item_tokens(i) for i in chosen)))
    return bodies


class Connection:
    """A minimal HTTP/1.1 keep-alive client on one asyncio connection.

    The load generator must cost little CPU next to the servers it measures: httpx's connection pool
    slows down badly with many concurrent connections (on the 2-core development machine: 148 GET
    /healthz per s with 64 concurrent connections, against 3,586 per s with this loop).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        """The response's status code (its body is read and dropped)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next((int(line.split(b":", 1)[1]) for line in lines[1:]
                       if line.lower().startswith(b"content-length:")), None)
        if length is None:
            raise ConnectionError("response without Content-Length")
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load_test(url: str, bodies: list[tuple[bytes, int]], clients: int, seconds: float,
                    max_requests: int, server_pid: int | None = None, path: str = "/token_rewards",
                    cpu_of: Callable[[int], float | None] | None = None) -> Sample:
    """`clients` closed loops (send, await the answer, send the next), each on its own keep-alive
    connection, for `seconds` after a 1 s warm-up, at most `max_requests` measured requests."""
    sample = Sample(0, 0.0)
    measuring = stop = False
    host, port = url.removeprefix("http://").rsplit(":", 1)

    async def client(index: int) -> None:
        connection = Connection(host, int(port))
        position = index * 7919
        while not stop and len(sample.latencies) + sample.errors < max_requests:
            body, body_tokens = bodies[position % len(bodies)]
            position += clients
            sent = time.perf_counter()
            try:
                status = await connection.post(path, body)
            except (OSError, asyncio.IncompleteReadError, ValueError):  # counted; reconnect
                connection.close()
                status = -1
            elapsed = time.perf_counter() - sent
            if not measuring or stop:
                continue
            if status != 200:
                sample.errors += 1
                continue
            sample.latencies.append(elapsed)
            sample.tokens += body_tokens
        connection.close()

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.sleep(1.0)  # warm-up: connections open, batch shapes seen
    measuring, started = True, time.perf_counter()
    cpu_of = cpu_of or tree_cpu_seconds
    cpu_started = cpu_of(server_pid) if server_pid else None
    loop_started = main_thread_cpu_seconds(server_pid) if server_pid else None
    await asyncio.sleep(seconds)
    stop = True
    sample.seconds = time.perf_counter() - started
    cpu_ended = cpu_of(server_pid) if server_pid else None
    loop_ended = main_thread_cpu_seconds(server_pid) if server_pid else None
    if cpu_started is not None and cpu_ended is not None:
        sample.cpu_seconds = cpu_ended - cpu_started
    if loop_started is not None and loop_ended is not None:
        sample.loop_cpu_seconds = loop_ended - loop_started
    await asyncio.gather(*tasks)
    return sample


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from tlcr.service.launcher import start_service

    work = Path(tempfile.mkdtemp(prefix="tlcr-bench-"))
    model = Path(args.model) if args.model else build_discriminator(
        work, args.hidden, args.layers, args.heads, args.max_length)
    items = workload(model, args.items, args.repeat_response)
    bodies = request_bodies(items, args.items_per_request)
    lengths = [item_tokens(i) for i in items]
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start (other work on the "
          "machine slows whichever system runs at that moment; rounds interleave the systems to spread it)")
    print(f"model: {model} (hidden {args.hidden}, {args.layers} layers) device={args.device or 'auto'} "
          f"dtype={args.dtype} torch threads={args.threads}; forward {'packed' if args.packing else 'padded'} "
          f"and freed memory {'kept' if args.keep_freed_memory else 'returned (glibc defaults)'} in every system")
    print(f"workload: {len(items)} controlled-task items, tokens per item: mean {statistics.mean(lengths):.1f}, "
          f"min {min(lengths)}, max {max(lengths)}; {args.items_per_request} item(s) per request; "
          f"{args.rounds} rounds of {args.duration:g} s per system and client count", flush=True)

    local = InProcess(model, items, args)
    server_args = ["--torch-threads", str(args.threads), "--dtype", args.dtype,
                   "--max-wait-ms", str(args.max_wait_ms), "--token-budget", str(args.token_budget),
                   "--max-batch-size", str(args.max_batch_size), "--log-level", "warning"] + (
                       [] if args.packing else ["--no-packing"]) + (
                       [] if args.keep_freed_memory else ["--no-keep-freed-memory"])
    if args.device:
        server_args += ["--device", args.device]
    ours = start_service(model, extra_args=server_args, ready_timeout=600, log_path=work / "ours.log")
    separate = start_service(model, extra_args=[*server_args, "--forward-process"], ready_timeout=600,
                             log_path=work / "ours-process.log") if args.compare_forward_process else None
    naive, naive_url = start_naive_server(args, model, work / "naive.log")
    samples: dict[tuple[str, int | None], list[Sample]] = {}
    try:
        for round_index in range(args.rounds):
            for name, batches in (("in-process", local.batched), ("in-process, unbatched", local.unbatched)):
                samples.setdefault((name, None), []).append(local.measure(batches, args.duration))
            for clients in args.clients:
                if 1 < clients * args.items_per_request < args.max_batch_size:
                    samples.setdefault((IN_FLIGHT, clients), []).append(
                        local.measure(local.in_flight(clients * args.items_per_request), args.duration))
                systems = [("ours", ours.url, ours.pid), ("naive", naive_url, naive.pid)]
                if separate is not None:
                    systems.insert(1, (OURS_PROCESS, separate.url, separate.pid))
                for name, url, pid in systems if round_index % 2 == 0 else systems[::-1]:
                    before = batch_counters(url) if name.startswith("ours") else (0.0, 0.0)
                    sample = asyncio.run(load_test(url, bodies, clients, args.duration, args.max_requests, pid))
                    if name.startswith("ours"):
                        after = batch_counters(url)
                        sample.batches = (after[0] - before[0], after[1] - before[1])
                    samples.setdefault((name, clients), []).append(sample)
            line = ", ".join(f"{name}{'' if c is None else f' x{c}'} {s[-1].tokens / s[-1].seconds:,.0f}"
                             for (name, c), s in samples.items())
            print(f"round {round_index + 1} (load {os.getloadavg()[0]:.1f}), tokens/s: {line}", flush=True)
    finally:
        ours.stop()
        if separate is not None:
            separate.stop()
        naive.terminate()
        naive.wait(30)

    results = {key: summarize(key[0], key[1], value) for key, value in samples.items()}
    limit, unbatched = results[("in-process", None)], results[("in-process, unbatched", None)]
    print(f"\nin-process batched forward: {limit.tokens_per_s:,.0f} tokens/s (the limit); one forward per request: "
          f"{unbatched.tokens_per_s:,.0f} tokens/s (the most a server that does not batch across requests "
          f"can reach; the ratio {limit.tokens_per_s / unbatched.tokens_per_s:.2f} bounds ours / naive here)")
    print(f"per CPU-second of the measured process: in-process {fmt(limit.tokens_per_cpu_s)} tokens batched, "
          f"{fmt(unbatched.tokens_per_cpu_s)} one forward per request")
    print("\n| clients | ours tokens/s | ours p50 / p99 ms | ours mean batch | naive tokens/s | naive p50 / p99 ms "
          "| ours / in-process | ours / in-process, batches of the items in flight | ours / naive "
          "| ours, naive tokens per CPU-s | ours / naive per CPU-s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ratios: dict[str, dict[str, float | None]] = {}
    for clients in args.clients:
        o, n = results[("ours", clients)], results[("naive", clients)]
        vs_limit, vs_naive = o.tokens_per_s / limit.tokens_per_s, o.tokens_per_s / n.tokens_per_s
        per_cpu = (o.tokens_per_cpu_s / n.tokens_per_cpu_s) if o.tokens_per_cpu_s and n.tokens_per_cpu_s else None
        in_flight = results.get((IN_FLIGHT, clients))  # none for 1 client (= unbatched) or ≥ a full batch (= limit)
        if in_flight is None:
            in_flight = unbatched if clients * args.items_per_request <= 1 else limit
        vs_in_flight = o.tokens_per_s / in_flight.tokens_per_s
        print(f"| {clients} | {o.tokens_per_s:,.0f} | {o.p50_ms:.1f} / {o.p99_ms:.1f} | {o.mean_batch_size:.1f} | "
              f"{n.tokens_per_s:,.0f} | {n.p50_ms:.1f} / {n.p99_ms:.1f} | {vs_limit:.2f} | {vs_in_flight:.2f} | "
              f"{vs_naive:.2f} | {fmt(o.tokens_per_cpu_s)}, {fmt(n.tokens_per_cpu_s)} | {fmt(per_cpu, '.2f')} |")
        ratios[str(clients)] = {"ours_vs_in_process": vs_limit, "ours_vs_in_process_in_flight": vs_in_flight,
                                "ours_vs_naive": vs_naive, "ours_vs_naive_per_cpu_s": per_cpu}
    request_tokens = args.items_per_request * statistics.mean(lengths)
    forward_ms = {name: 1000 * request_tokens / r.tokens_per_cpu_s for name, r in
                  (("batched", limit), ("one forward per request", unbatched)) if r.tokens_per_cpu_s}
    print("\nCPU ms per request: the server's event-loop thread (HTTP, validation, routing, hand-off, response) and "
          "the rest (forward thread, workers); in-process, the forward alone: "
          + ", ".join(f"{name} {ms:.2f}" for name, ms in forward_ms.items()))
    print("\n| clients | ours: event loop | ours: rest | naive: event loop | naive: rest |")
    print("|---:|---:|---:|---:|---:|")
    for clients in args.clients:
        o, n = results[("ours", clients)], results[("naive", clients)]
        print(f"| {clients} | {fmt(o.loop_cpu_ms_per_request, '.2f')} | {fmt(o.rest_cpu_ms_per_request, '.2f')} | "
              f"{fmt(n.loop_cpu_ms_per_request, '.2f')} | {fmt(n.rest_cpu_ms_per_request, '.2f')} |")
    if args.compare_forward_process:
        print(f"\n{OURS_PROCESS} (--forward-process), side by side:")
        for clients in args.clients:
            o, f = results[("ours", clients)], results[(OURS_PROCESS, clients)]
            print(f"  {clients} client(s): {f.tokens_per_s:,.0f} tokens/s, p50 {f.p50_ms:.1f} ms, event loop "
                  f"{fmt(f.loop_cpu_ms_per_request, '.2f')} / rest {fmt(f.rest_cpu_ms_per_request, '.2f')} CPU ms per "
                  f"request; it / ours (forwards in a thread) {f.tokens_per_s / o.tokens_per_s:.2f}; it / in-process "
                  f"{f.tokens_per_s / limit.tokens_per_s:.2f}; it / naive "
                  f"{f.tokens_per_s / results[('naive', clients)].tokens_per_s:.2f}")
            ratios[str(clients)]["forward_process_vs_ours"] = f.tokens_per_s / o.tokens_per_s
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}; errors: ours "
          f"{sum(r.errors for k, r in results.items() if k[0] == 'ours')}, naive "
          f"{sum(r.errors for k, r in results.items() if k[0] == 'naive')}")
    # Ratios within each round (the two systems measured minutes apart) move less with the machine's speed than
    # ratios of the medians over rounds.
    per_round = {}
    for clients in args.clients:
        ours_rounds = results[("ours", clients)].tokens_per_s_rounds
        for name, reference in (("naive", results[("naive", clients)]), ("in_process", limit)):
            paired = [o / r for o, r in zip(ours_rounds, reference.tokens_per_s_rounds, strict=True)]
            per_round[f"{clients}:ours_vs_{name}"] = paired
            ratios[str(clients)][f"ours_vs_{name}_round_median"] = statistics.median(paired)
        print(f"{clients} client(s), per round: ours / naive "
              f"{', '.join(f'{x:.2f}' for x in per_round[f'{clients}:ours_vs_naive'])}; ours / in-process "
              f"{', '.join(f'{x:.2f}' for x in per_round[f'{clients}:ours_vs_in_process'])}")
    if "16" in ratios and "1" in ratios:  # issue 22's per-request goals
        in16, naive1 = ratios["16"]["ours_vs_in_process"] or 0.0, ratios["1"]["ours_vs_naive"] or 0.0
        flight16 = ratios["16"]["ours_vs_in_process_in_flight"] or 0.0
        print(f"per-request goals: 16 clients ours/in-process {in16:.2f} (goal >= {GOAL_IN_PROCESS_16}) "
              f"{'MET' if in16 >= GOAL_IN_PROCESS_16 else 'NOT MET'}, against batches of the 16 items in flight "
              f"{flight16:.2f} {'MET' if flight16 >= GOAL_IN_PROCESS_16 else 'NOT MET'}; 1 client ours/naive "
              f"{naive1:.2f} (goal >= {GOAL_NAIVE_1}) {'MET' if naive1 >= GOAL_NAIVE_1 else 'NOT MET'}; medians of the "
              f"per-round ratios: {ratios['16']['ours_vs_in_process_round_median']:.2f} and "
              f"{ratios['1']['ours_vs_naive_round_median']:.2f}")
    report = {"settings": vars(args), "tokens_per_item_mean": statistics.mean(lengths),
              "results": [asdict(r) for r in results.values()], "ratios": ratios}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    naive = sub.add_parser("naive-server", help="(internal) run the naive server on an inherited socket")
    naive.add_argument("--model", required=True)
    naive.add_argument("--fd", type=int, required=True)
    naive.add_argument("--threads", type=int, default=1)
    naive.add_argument("--device", default=None)
    naive.add_argument("--dtype", default="auto")
    naive.add_argument("--no-packing", dest="packing", action="store_false")
    naive.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false")
    parser.add_argument("--model", help="an existing discriminator checkpoint (default: build one)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA if present)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bf16, fp16")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, for every system alike")
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 64])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--max-requests", type=int, default=200_000, help="bound on requests per measurement")
    parser.add_argument("--items", type=int, default=512, help="distinct items in the workload")
    parser.add_argument("--items-per-request", type=int, default=1)
    parser.add_argument("--repeat-response", type=int, default=1, help="repeat each response to lengthen it")
    parser.add_argument("--max-wait-ms", type=float, default=50.0, help="our server's cap on waiting (adaptive)")
    parser.add_argument("--token-budget", type=int, default=16384)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--no-packing", dest="packing", action="store_false",
                        help="every system scores padded batches (default: packed, our server's default)")
    parser.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                        help="glibc's default malloc in every system (default: our server's setting, freed memory "
                             "kept, in all three; tlcr.core.allocator)")
    parser.add_argument("--compare-forward-process", action="store_true",
                        help="also measure our server with its forwards in a child process (--forward-process)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.command == "naive-server":
        naive_server(args)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()

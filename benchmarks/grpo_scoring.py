"""GRPO-shaped scoring, side by side in one run: n responses per prompt scored by the in-process forward,
our service without and with prefix sharing, and vLLM's pooling server on the same checkpoint.

    python benchmarks/grpo_scoring.py                      # both models, workloads a, b, c; vLLM if found
    python benchmarks/grpo_scoring.py --models h512 --workloads b --rounds 3

Workloads (prompts and responses from the HH-RLHF harmless-base test sample, tokenized by the model's
tokenizer; each prompt is a run of consecutive HH dialogues cut to its length, so it reads as a multi-turn
dialogue):
    a: distinct prompts, n = 1, prompt ~150 and response ~60 tokens;
    b: n = 8 responses per prompt, prompt ~150, response ~60 (GRPO on HH-style prompts);
    c: n = 16 responses per prompt, prompt ~400, response ~60.
Each client sends one request per prompt (its n responses), waits for the answer and sends the next
(closed loop, --clients of them). --split sends each response as its own request instead (verl's agent
loop: n requests per prompt arriving together).

Targets, alternated within each round (the order reverses every other round):
    in-process unshared  TokenScorer on --clients requests' items per forward, padded batches, no sharing (the
                         limit before prefix sharing and packing);
    in-process shared    the same forward packed and prefix-shared (the limit of the default);
    ours unshared        `tlcr serve --no-prefix-sharing --no-packing` (padded batches, every prompt recomputed);
    ours shared padded   `tlcr serve --no-packing` (prompts shared through the KV cache, padded batches);
    ours shared          `tlcr serve` (packed and prefix-shared: the defaults);
    vllm                  vLLM's OpenAI server, `--runner pooling --convert classify`, POST /pooling with
                          task token_classify (skipped with a note when no vLLM python is found: --vllm-python,
                          $TLCR_VLLM_PYTHON, else .venv-vllm/bin/python in the repository).
Models: `demo` (the demo pipeline's size: hidden 128, 2 layers, 4 heads) and `h512` (hidden 512, 8 layers,
8 heads), Llama token classifiers with random weights (speed does not depend on them).

Reported: response tokens scored per second (median over rounds), p50/p99 request latency, and the goals:
on (b) with h512, ours shared >= 2x vLLM and >= 2x ours unshared; on (a), ours shared >= 0.95x ours unshared.
Every system gets the same torch/OpenMP thread count (--threads; vLLM through VLLM_CPU_OMP_THREADS_BIND) and the
same malloc settings (freed memory kept, tlcr.core.allocator; vLLM through MALLOC_MMAP_THRESHOLD_ and
MALLOC_TRIM_THRESHOLD_; --no-keep-freed-memory: glibc's defaults in all).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Run as a script, this file's folder comes first on sys.path, where service.py would hide tlcr's packages.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

HH_SAMPLE = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"
# hidden, layers, heads: the demo pipeline's default width (vLLM's CPU attention needs head_dim >= 32), and 512 × 8
MODELS = {"demo": (128, 2, 4), "h512": (512, 8, 8)}
WORKLOADS = {"a": (1, 150, 60), "b": (8, 150, 60), "c": (16, 400, 60)}  # n, prompt tokens, response tokens
TARGETS = ("in-process unshared", "in-process shared", "ours unshared", "ours shared padded", "ours shared", "vllm")
GOAL_VS_VLLM, GOAL_VS_UNSHARED, GOAL_DISTINCT = 2.0, 2.0, 0.95


def _service_bench() -> Any:
    """benchmarks/service.py (its checkpoint builder, load generator and summaries), loaded by path."""
    spec = importlib.util.spec_from_file_location("tlcr_bench_service", HERE / "service.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _service_bench()


# --- workload -----------------------------------------------------------------------------------------

def hh_texts(path: Path) -> tuple[list[str], list[str]]:
    """(prompts, responses) of the HH sample's transcripts, in file order."""
    from tlcr.core.data.pairs import split_transcript

    prompts, responses = [], []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            for key in ("chosen", "rejected"):
                try:
                    prompt, response = split_transcript(record[key])
                except ValueError:
                    continue
                if response.strip():
                    prompts.append(prompt)
                    responses.append(response)
    return prompts, responses


@dataclass
class Group:
    """One prompt and its n responses (token ids of the served model's tokenizer)."""

    prompt: list[int]
    responses: list[list[int]]

    @property
    def response_tokens(self) -> int:
        return sum(len(r) for r in self.responses)


def build_groups(model: Path, hh: tuple[list[str], list[str]], count: int, n: int, prompt_tokens: int,
                 response_tokens: int, seed: int) -> list[Group]:
    """`count` prompts of about `prompt_tokens` tokens (±20 %), each with n responses of
    `response_tokens` × uniform(0.5, 1.5) tokens: HH responses, cut, or continued by another when short."""
    from tlcr.core.models import encode_prompt_response, load_tokenizer

    tokenizer = load_tokenizer(model)
    prompts, responses = hh
    rng = random.Random(seed)
    start = rng.randrange(len(prompts))
    groups = []
    for g in range(count):
        want = max(1, round(prompt_tokens * rng.uniform(0.8, 1.2)))
        text, k = "", start + g * 7
        while True:  # consecutive dialogues until long enough: a multi-turn prompt, cut at its start
            text = prompts[k % len(prompts)] + text
            ids, _ = encode_prompt_response(tokenizer, text, " ok")
            if len(ids) >= want or k < start + g * 7 - 50:
                break
            k -= 1
        prompt = ids[-want:]
        chosen = []
        for _ in range(n):
            length = max(1, round(response_tokens * rng.uniform(0.5, 1.5)))
            response: list[int] = []
            while len(response) < length:  # a short HH response continues with another
                response += encode_prompt_response(tokenizer, prompts[0],
                                                   responses[rng.randrange(len(responses))])[1]
            chosen.append(response[:length])
        groups.append(Group(prompt, chosen))
    return groups


def request_bodies(groups: list[Group], split: bool, vllm_model: str | None) -> list[tuple[bytes, int]]:
    """(JSON body, response tokens in it) per request: one per group, or with `split` one per response."""
    bodies = []
    for group in groups:
        parts = [[r] for r in group.responses] if split else [group.responses]
        for responses in parts:
            tokens = sum(len(r) for r in responses)
            if vllm_model is None:
                body: dict[str, Any] = {"items": [{"prompt_token_ids": group.prompt, "response_token_ids": r}
                                                  for r in responses]}
            else:
                body = {"model": vllm_model, "task": "token_classify", "input": [group.prompt + r for r in responses]}
            bodies.append((json.dumps(body).encode(), tokens))
    return bodies


# --- vLLM ---------------------------------------------------------------------------------------------

def vllm_python(option: str | None) -> Path | None:
    for candidate in (option, os.environ.get("TLCR_VLLM_PYTHON"), str(REPO / ".venv-vllm" / "bin" / "python")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


VLLM_DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16"}


def start_vllm(python: Path, model: Path, args: argparse.Namespace,
               log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    from tlcr.core.allocator import MMAP_THRESHOLD, TRIM_THRESHOLD

    with socket.socket() as sock:  # a free port (vLLM binds it itself)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    threads = args.threads
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}" if threads > 1 else "0",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"), "TOKENIZERS_PARALLELISM": "false"}
    if args.keep_freed_memory:  # what tlcr.core.allocator sets in ours, as glibc reads it at start
        env |= {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--runner", "pooling",
               "--convert", "classify", "--gpu-memory-utilization", "0.08", "--host", "127.0.0.1", "--port",
               str(port), "--served-model-name", "tlcr", "--dtype", VLLM_DTYPES[args.dtype]]
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        bench.wait_until_ready(process, url + "/health", "vLLM", log, 900)
    except RuntimeError:
        stop(process)  # its engine core may outlive the server process
        raise
    return process, url


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group it leads (vLLM's engine core is a child), SIGKILL after 30 s."""
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)  # the group outlives its leader while a child runs
    except ProcessLookupError:
        return
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def vllm_agreement(url: str, scorer: Any, groups: list[Group]) -> float:
    """Largest difference between vLLM's and our response-token probabilities on two groups."""
    import numpy as np

    from tlcr.service.scorer import Encoded

    worst = 0.0
    for group in groups[:2]:
        body = {"model": "tlcr", "task": "token_classify", "input": [group.prompt + r for r in group.responses]}
        data = httpx.post(url + "/pooling", json=body, timeout=120).raise_for_status().json()["data"]
        ours = scorer.probabilities([Encoded(group.prompt, r) for r in group.responses])
        for row, response, mine in zip(data, group.responses, ours, strict=True):
            theirs = np.asarray(row["data"], dtype=np.float64).reshape(-1)[len(group.prompt):]
            worst = max(worst, float(np.abs(theirs[:len(response)] - mine).max()))
    return worst


# --- in-process ---------------------------------------------------------------------------------------

def in_process(scorer: Any, groups: list[Group], clients: int, seconds: float) -> Any:
    """`clients` requests' items per forward, for `seconds`: response tokens per second, no HTTP."""
    from tlcr.service.scorer import Encoded

    batches = [[Encoded(g.prompt, r) for g in groups[i:i + clients] for r in g.responses]
               for i in range(0, len(groups), clients)]
    tokens, started, cpu_started, i = 0, time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - started < seconds:
        batch = batches[i % len(batches)]
        scorer.probabilities(batch)
        tokens += sum(len(e.response_ids) for e in batch)
        i += 1
    return bench.Sample(tokens, time.perf_counter() - started, cpu_seconds=time.process_time() - cpu_started)


# --- the run ------------------------------------------------------------------------------------------

def computed_per_response_token(groups: list[Group], shared: bool) -> float:
    """Tokens a forward computes per response token scored (padding aside): the prompt once per group when
    shared (n > 1), else once per response."""
    responses = sum(g.response_tokens for g in groups)
    prompts = sum(len(g.prompt) * (1 if shared and len(g.responses) > 1 else len(g.responses)) for g in groups)
    return (prompts + responses) / responses


@dataclass
class Row:
    model: str
    workload: str
    target: str
    response_tokens_per_s: float
    rounds: list[float]
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    errors: int
    response_tokens_per_cpu_s: float | None = None  # CPU time of the whole system (all its processes)
    mfu: float | None = None  # 2 × parameters FLOP per token computed, over --peak-tflops


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tlcr.core.allocator import keep_freed_memory
    from tlcr.service.launcher import start_service
    from tlcr.service.scorer import TokenScorer

    torch.set_num_threads(args.threads)
    if args.keep_freed_memory:  # every system alike: ours by default, vLLM through glibc's variables
        keep_freed_memory()
    work = Path(tempfile.mkdtemp(prefix="tlcr-grpo-"))
    hh = hh_texts(Path(args.hh))
    python = None if args.no_vllm else vllm_python(args.vllm_python)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; {args.threads} threads "
          f"per system; {args.clients} clients; {args.rounds} rounds of {args.duration:g} s per target; requests "
          f"{'one per response' if args.split else 'one per prompt (its n responses)'}")
    print(f"vLLM: {python}" if python else "vLLM: skipped (--no-vllm) " if args.no_vllm else
          "vLLM: no vLLM python found (--vllm-python, $TLCR_VLLM_PYTHON, .venv-vllm/bin/python): skipped")
    rows: list[Row] = []
    notes: dict[str, Any] = {}
    for model_name in args.models:
        hidden, layers, heads = MODELS[model_name] if not args.tiny else (32, 1, 2)
        max_length = 1024
        print(f"\nmodel {model_name}: building", flush=True)
        model = bench.build_discriminator(work / model_name, hidden, layers, heads, max_length)
        workloads = {}
        for w in args.workloads:
            n, prompt_tokens, response_tokens = WORKLOADS[w]
            scale = 0.2 if args.tiny else 1.0
            groups = build_groups(model, hh, args.prompts, n, max(2, round(prompt_tokens * scale)),
                                  max(2, round(response_tokens * scale)), seed=ord(w))
            workloads[w] = groups
            mean_p = statistics.mean(len(g.prompt) for g in groups)
            mean_r = statistics.mean(len(r) for g in groups for r in g.responses)
            print(f"workload {w}: {len(groups)} prompts x {n} responses; prompt {mean_p:.0f} tokens, response "
                  f"{mean_r:.0f} tokens (means); prompt share of tokens forwarded unshared "
                  f"{mean_p / (mean_p + mean_r):.0%}", flush=True)
        unshared = TokenScorer.load(str(model), device=args.device, dtype=args.dtype)
        shared = TokenScorer.load(str(model), device=args.device, dtype=args.dtype)
        params = sum(p.numel() for p in unshared.model.parameters())
        print(f"model {model_name}: hidden {hidden}, {layers} layers, {heads} heads, {params / 1e6:.1f} M parameters",
              flush=True)
        if not (shared.enable_packing() and shared.enable_prefix_sharing()):
            raise RuntimeError("packing or prefix sharing is unavailable for the benchmark model")
        server_args = ["--torch-threads", str(args.threads), "--log-level", "warning", "--max-length", str(max_length),
                       "--max-items-per-request", "256", "--dtype", args.dtype] + (
                           [] if args.keep_freed_memory else ["--no-keep-freed-memory"]) + (
                           ["--device", args.device] if args.device else [])
        servers: dict[str, tuple[str, Any]] = {}
        processes: list[Any] = []
        vllm_process = None
        try:
            for name, extra in (("ours unshared", ["--no-prefix-sharing", "--no-packing"]),
                                ("ours shared padded", ["--no-packing"]), ("ours shared", [])):
                if name not in args.targets:
                    continue
                service = start_service(model, extra_args=server_args + extra, ready_timeout=600,
                                        env=dict(args.service_env),
                                        log_path=work / f"{model_name}-{name.replace(' ', '-')}.log")
                processes.append(service)
                servers[name] = (service.url, service.pid)
            if python is not None and "vllm" in args.targets:
                vllm_process, vllm_url = start_vllm(python, model, args, work / f"{model_name}-vllm.log")
                servers["vllm"] = (vllm_url, vllm_process.pid)
                try:
                    agreement = vllm_agreement(vllm_url, unshared, workloads[args.workloads[0]])
                except httpx.HTTPError as exc:  # e.g. vLLM's CPU attention refuses the model's head size
                    notes[f"{model_name}_vllm_error"] = str(exc)
                    print(f"vLLM cannot score this model ({exc}); its target is skipped: see "
                          f"{work / f'{model_name}-vllm.log'}", flush=True)
                    del servers["vllm"]
                else:
                    notes[f"{model_name}_vllm_max_abs_diff"] = agreement
                    print(f"vLLM's response-token probabilities vs ours: max |difference| {agreement:.1e}", flush=True)
            samples: dict[tuple[str, str], list[Any]] = {}
            for round_index in range(args.rounds):
                for w, groups in workloads.items():
                    targets = [t for t in ["in-process unshared", "in-process shared", *servers]
                               if t in args.targets]
                    for target in targets if round_index % 2 == 0 else targets[::-1]:
                        if target.startswith("in-process"):
                            scorer = shared if target.endswith(" shared") else unshared
                            sample = in_process(scorer, groups, args.clients, args.duration)
                        else:
                            url, pid = servers[target]
                            bodies = request_bodies(groups, args.split, "tlcr" if target == "vllm" else None)
                            path = "/pooling" if target == "vllm" else "/token_rewards"
                            sample = asyncio.run(bench.load_test(url, bodies, args.clients * (
                                WORKLOADS[w][0] if args.split else 1), args.duration, 10**9, pid, path=path,
                                cpu_of=bench.tree_cpu_seconds))
                        samples.setdefault((w, target), []).append(sample)
                        print(f"  {model_name} {w} {target}: {sample.tokens / sample.seconds:,.0f} response tokens/s "
                              f"({len(sample.latencies)} requests, load {os.getloadavg()[0]:.1f})", flush=True)
                line = "; ".join(f"{w} {t} {s[-1].tokens / s[-1].seconds:,.0f}" for (w, t), s in samples.items())
                print(f"round {round_index + 1} (load {os.getloadavg()[0]:.1f}), response tokens/s: {line}", flush=True)
        finally:
            for service in processes:
                service.stop()
            if vllm_process is not None:
                stop(vllm_process)
        for (w, target), value in samples.items():
            summary = bench.summarize(target, None, value)
            mfu = None
            if args.peak_tflops:
                computed = summary.tokens_per_s * computed_per_response_token(workloads[w], " shared" in target)
                mfu = 2 * params * computed / (args.peak_tflops * 1e12)
            rows.append(Row(model_name, w, target, summary.tokens_per_s, summary.tokens_per_s_rounds, summary.p50_ms,
                            summary.p99_ms, summary.requests, summary.errors, summary.tokens_per_cpu_s, mfu))
    shutil.rmtree(work, ignore_errors=True)  # kept when the run fails: the servers' logs are there
    return report(args, rows, notes, python is not None)


def report(args: argparse.Namespace, rows: list[Row], notes: dict[str, Any], with_vllm: bool) -> dict[str, Any]:
    print("\n| model | workload | target | response tokens/s | rounds | p50 / p99 ms | requests | errors "
          "| per CPU-s | MFU |")
    print("|---|---|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        latency = "n/a" if r.p50_ms is None else f"{r.p50_ms:.0f} / {r.p99_ms:.0f}"
        mfu = "n/a" if r.mfu is None else f"{100 * r.mfu:.3g} %"
        print(f"| {r.model} | {r.workload} | {r.target} | {r.response_tokens_per_s:,.0f} | "
              f"{', '.join(f'{x:,.0f}' for x in r.rounds)} | {latency} | {r.requests} | {r.errors} | "
              f"{bench.fmt(r.response_tokens_per_cpu_s)} | {mfu} |")
    if args.peak_tflops:
        print(f"MFU: 2 × parameters FLOP per token computed (a shared prompt once; vLLM computes every prompt), "
              f"over {args.peak_tflops:g} TFLOP/s")
    rate = {(r.model, r.workload, r.target): r.response_tokens_per_s for r in rows}
    per_cpu = {(r.model, r.workload, r.target): r.response_tokens_per_cpu_s for r in rows}
    rounds = {(r.model, r.workload, r.target): r.rounds for r in rows}
    ratios: dict[str, float] = {}
    # Ratios within each round (the targets measured minutes apart) move less with the machine's speed than ratios
    # of the medians over rounds.
    per_round: dict[str, list[float]] = {}
    print()
    for model in args.models:
        for w in args.workloads:
            shared = rate.get((model, w, "ours shared"))
            for other in ("ours unshared", "ours shared padded", "vllm", "in-process unshared", "in-process shared"):
                if shared is not None and rate.get((model, w, other)):
                    ratios[f"{model}/{w}: ours shared / {other}"] = shared / rate[(model, w, other)]
                    per_round[f"{model}/{w}: ours shared / {other}"] = [
                        a / b for a, b in zip(rounds[(model, w, "ours shared")], rounds[(model, w, other)],
                                              strict=True) if b]
                mine, theirs = per_cpu.get((model, w, "ours shared")), per_cpu.get((model, w, other))
                if mine and theirs:
                    ratios[f"{model}/{w}: ours shared / {other}, per CPU-s"] = mine / theirs
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}")
    print("\ngoals (ratios measured side by side in this run):")

    def verdict(key: str, goal: float) -> None:
        if key in ratios:
            paired = per_round.get(key, [])
            print(f"  {key} = {ratios[key]:.2f} (goal >= {goal}) {'MET' if ratios[key] >= goal else 'NOT MET'}; per "
                  f"round {', '.join(f'{x:.2f}' for x in paired)}"
                  + (f" (median {statistics.median(paired):.2f})" if paired else ""))
        else:
            print(f"  {key}: not measured in this run")

    verdict("h512/b: ours shared / vllm", GOAL_VS_VLLM)
    verdict("h512/b: ours shared / ours unshared", GOAL_VS_UNSHARED)
    for model in args.models:
        verdict(f"{model}/a: ours shared / ours unshared", GOAL_DISTINCT)
    if not with_vllm:
        print("  (vLLM was not measured: its comparison is missing)")
    result = {"settings": vars(args), "results": [asdict(r) for r in rows], "ratios": ratios,
              "ratios_per_round": per_round, "notes": notes}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


def env_assignment(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS), help="demo,h512")
    parser.add_argument("--workloads", type=lambda s: s.split(","), default=list(WORKLOADS), help="a,b,c")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (closed loop)")
    parser.add_argument("--targets", type=lambda s: s.split(","), default=list(TARGETS), help=",".join(TARGETS))
    parser.add_argument("--split", action="store_true", help="one request per response instead of per prompt")
    parser.add_argument("--prompts", type=int, default=48, help="distinct prompts per workload")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of every system")
    parser.add_argument("--device", default="cpu", help="cpu, cuda")
    parser.add_argument("--dtype", default="float32", choices=sorted(VLLM_DTYPES),
                        help="of every system (auto: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--peak-tflops", type=float, help="print MFU against this peak (H200 bf16: 989)")
    parser.add_argument("--hh", default=str(HH_SAMPLE), help="HH-RLHF jsonl.gz with chosen/rejected transcripts")
    parser.add_argument("--vllm-python", help="python of a venv with vLLM (default: $TLCR_VLLM_PYTHON, then "
                                              ".venv-vllm/bin/python in the repository)")
    parser.add_argument("--no-vllm", action="store_true", help="skip vLLM even if found")
    parser.add_argument("--no-keep-freed-memory", dest="keep_freed_memory", action="store_false",
                        help="glibc's default malloc in every system (default: freed memory kept in all, as our "
                             "server does; tlcr.core.allocator)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and 1/5 of the lengths (for tests)")
    parser.add_argument("--service-env", action="append", default=[], type=env_assignment,
                        metavar="KEY=VALUE", help="an environment variable of our services only, e.g. "
                        "OMP_WAIT_POLICY=PASSIVE (repeatable)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in MODELS] + [w for w in args.workloads if w not in WORKLOADS] + [
        t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown model or workload: {', '.join(unknown)}")
    if not Path(args.hh).is_file():
        parser.error(f"HH sample {args.hh} not found (--hh)")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run(args)


if __name__ == "__main__":
    main()

"""Reviser calls and labelling in worker processes (`--workers N`): the same output, cache and ledger as one
process, failures reported, and no worker left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from tests.support.fake_openai_server import FakeOpenAIServer, Rule, Script
from tests.support.processes import wait_until_gone
from tlcr.core.data.pairs import PreferencePair
from tlcr.core.retry import RetryPolicy
from tlcr.labeling.cache import RevisionCache
from tlcr.labeling.options import LabelOptions
from tlcr.labeling.revisers import OpenAIReviser, ReviserError
from tlcr.labeling.revision_processes import (
    CALLS_PER_WORKER,
    START_METHODS,
    StartMethod,
    available_cpus,
    default_start_method,
    default_workers,
)
from tlcr.labeling.usage import UsageLedger
from tlcr.labeling.worker import RunResult, WorkerConfig, label_pairs


def _reviser(server: FakeOpenAIServer, cache: Path, max_retries: int = 0) -> OpenAIReviser:
    return OpenAIReviser("fake-reviser", api_key="k", base_url=server.base_url,
                         retry=RetryPolicy(max_retries=max_retries, backoff_s=0.01, max_backoff_s=0.01),
                         cache=RevisionCache(cache), ledger=UsageLedger(), concurrency=8)


async def _label(pairs: list[PreferencePair], server: FakeOpenAIServer, tokenizer: PreTrainedTokenizerBase,
                 out: Path, workers: int, *, cache: Path | None = None,
                 start: StartMethod | None = None) -> tuple[OpenAIReviser, RunResult]:
    reviser = _reviser(server, cache or out.with_name("cache.sqlite"))
    try:
        result = await label_pairs(pairs, reviser, tokenizer, WorkerConfig(
            out=out, tokenizer_name="tiny", concurrency=8, progress=False, workers=workers, worker_start=start))
    finally:
        await reviser.aclose()
    return reviser, result


def worker_pids(parent: int) -> set[int]:
    """Pids of the labelling worker processes whose parent is `parent` (Linux /proc): spawned ones by their
    command line, forked ones by the name they give themselves."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            spawned = b"labeling.revision_processes" in (entry / "cmdline").read_bytes()
            if ppid == parent and (spawned or (entry / "comm").read_text().strip() == "tlcr-label-wkr"):
                pids.add(int(entry.name))
    return pids


def connected_to(pid: int, port: int) -> bool:
    """Whether process `pid` holds a TCP connection to loopback port `port` (Linux /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        columns = line.split()
        if int(columns[2].split(":")[1], 16) == port:  # rem_address's port
            inodes.add(columns[9])
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in {f"socket:[{inode}]" for inode in inodes}:
                    return True
    return False


@pytest.mark.parametrize("start", START_METHODS)
async def test_two_workers_write_the_same_file_cache_and_usage_as_one_process(
        fake_llm: FakeOpenAIServer, controlled_task: object, label_tokenizer: PreTrainedTokenizerBase,
        tmp_path: Path, start: StartMethod, caplog: pytest.LogCaptureFixture) -> None:
    # 120 pairs / 8 in flight * 0.2 s: 3 s. Forked workers make every call; spawned ones (~1.5 s to start) the
    # later calls, the main process the first ones
    # 120 distinct pairs: the task can draw the same pair twice, which the cache then answers without a call
    unique = {(p.prompt, p.rejected): p for p in controlled_task.pairs(130, seed=11)}  # type: ignore[attr-defined]
    pairs = list(unique.values())[:120]
    assert len(pairs) == 120
    # per-pair outcomes other than "ok" go through the workers too: an empty revision (all-negative, ok),
    # a refusal and a truncated answer (failed records)
    rules = [Rule("empty", match=pairs[1].rejected.strip()), Rule("refusal", match=pairs[2].rejected.strip()),
             Rule("truncated", match=pairs[3].rejected.strip())]
    fake_llm.set_script(Script(latency_s=0.2, rules=rules))
    one, result_one = await _label(pairs, fake_llm, label_tokenizer, tmp_path / "one" / "labels.jsonl", 1)
    fake_llm.set_script(Script(latency_s=0.2, rules=rules))
    two, result_two = await _label(pairs, fake_llm, label_tokenizer, tmp_path / "two" / "labels.jsonl", 2,
                                   start=start)
    assert result_one.complete and result_two.complete
    assert result_one.by_workers == 0
    assert result_two.by_workers == len(pairs) if start == "fork" else 0 < result_two.by_workers < len(pairs)
    assert (tmp_path / "two" / "labels.jsonl").read_bytes() == (tmp_path / "one" / "labels.jsonl").read_bytes()
    assert fake_llm.stats()["requests"] == len(pairs)
    assert len(RevisionCache(tmp_path / "two" / "cache.sqlite")) == len(pairs)
    assert two.ledger.to_dict() == one.ledger.to_dict()
    assert two.ledger.model("fake-reviser").answers == len(pairs)
    assert not worker_pids(os.getpid())
    # every worker exited when its input closed (one that does not is killed after 10 s, with a warning)
    assert "did not exit" not in caplog.text

    # a rerun on a fresh output with the same cache pays nothing: the main process reads the cache
    fake_llm.set_script(Script())
    again, _ = await _label(pairs, fake_llm, label_tokenizer, tmp_path / "again.jsonl", 2,
                            cache=tmp_path / "two" / "cache.sqlite", start=start)
    assert fake_llm.stats()["requests"] == 0 and again.ledger.model("fake-reviser").cache_hits == len(pairs)
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "one" / "labels.jsonl").read_bytes()


async def test_a_pair_out_of_retries_stays_for_the_rerun(fake_llm: FakeOpenAIServer, controlled_task: object,
                                                         label_tokenizer: PreTrainedTokenizerBase,
                                                         tmp_path: Path) -> None:
    pairs = controlled_task.pairs(120, seed=13)  # type: ignore[attr-defined]
    victim = pairs[-1]  # asked for after ~3 s: by a worker process
    fake_llm.set_script(Script(latency_s=0.2, rules=[Rule("500", match=victim.rejected.strip())]))
    out = tmp_path / "labels.jsonl"
    _, result = await _label(pairs, fake_llm, label_tokenizer, out, 2)
    assert result.unfinished == [victim.id] and victim.id not in out.read_text() and result.by_workers > 0
    fake_llm.set_script(Script())
    _, result = await _label(pairs, fake_llm, label_tokenizer, out, 2)
    assert result.complete and fake_llm.stats()["requests"] == 1


async def test_a_refused_key_stops_the_run_and_the_workers(fake_llm: FakeOpenAIServer,
                                                           controlled_pairs: list[PreferencePair],
                                                           label_tokenizer: PreTrainedTokenizerBase,
                                                           tmp_path: Path) -> None:
    fake_llm.set_script(Script(rules=[Rule("401")]))
    with pytest.raises(ReviserError, match="HTTP 401"):
        await _label(controlled_pairs, fake_llm, label_tokenizer, tmp_path / "labels.jsonl", 2)
    assert not wait_until_gone(worker_pids(os.getpid()))


@pytest.mark.parametrize("start", START_METHODS)
async def test_a_worker_that_dies_stops_the_run_with_its_name(fake_llm: FakeOpenAIServer, controlled_task: object,
                                                              label_tokenizer: PreTrainedTokenizerBase,
                                                              tmp_path: Path, start: StartMethod) -> None:
    fake_llm.set_script(Script(latency_s=0.5))
    pairs = controlled_task.pairs(200, seed=5)  # type: ignore[attr-defined]  # 200 / 8 in flight * 0.5 s: 12.5 s
    run = asyncio.create_task(_label(pairs, fake_llm, label_tokenizer, tmp_path / "labels.jsonl", 2, start=start))
    deadline = time.monotonic() + 60
    while not (pids := {pid for pid in worker_pids(os.getpid()) if connected_to(pid, fake_llm.port)}):
        assert time.monotonic() < deadline, "no worker made a call"
        await asyncio.sleep(0.02)
    os.kill(min(pids), signal.SIGKILL)  # a worker that is calling the endpoint: mid-run
    with pytest.raises(RuntimeError, match=r"labelling worker process \d \(pid \d+\) exited with code -9"):
        await asyncio.wait_for(run, timeout=60)
    assert not wait_until_gone(pids)


def test_default_workers_one_per_64_calls_at_most_one_per_cpu() -> None:
    assert default_workers(1) == default_workers(CALLS_PER_WORKER) == 1
    assert default_workers(CALLS_PER_WORKER + 1) == min(2, available_cpus())
    assert default_workers(1000) == min(16, available_cpus())


def test_workers_option_is_checked(tmp_path: Path) -> None:
    base = {"output_file": tmp_path / "o.jsonl", "tokenizer": "t"}
    openai = {**base, "reviser": "openai", "reviser_model": "m"}
    assert LabelOptions(**base).worker_processes() == 1  # type: ignore[arg-type]
    assert LabelOptions(**openai, concurrency=256, workers=3).worker_processes() == 3  # type: ignore[arg-type]
    assert LabelOptions(**openai, concurrency=256).worker_processes() == default_workers(256)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--workers 2 needs --reviser openai"):
        LabelOptions(**base, concurrency=8, workers=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"--workers \(9\) must be <= --concurrency \(8\)"):
        LabelOptions(**openai, concurrency=8, workers=9)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--workers must be >= 1"):
        LabelOptions(**openai, workers=0)  # type: ignore[arg-type]


def test_workers_fork_on_linux_and_spawn_elsewhere() -> None:
    assert default_start_method() == ("fork" if sys.platform == "linux" else "spawn")

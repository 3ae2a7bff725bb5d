"""Reviser calls and labelling in worker processes (`--workers N`): the same output, cache and ledger as one
process, failures reported, and no worker left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerBase

from core.data.pairs import PreferencePair
from core.retry import RetryPolicy
from labeling.cache import RevisionCache
from labeling.options import LabelOptions
from labeling.revisers import OpenAIReviser, ReviserError
from labeling.revision_processes import CALLS_PER_WORKER, available_cpus, default_workers
from labeling.usage import UsageLedger
from labeling.worker import WorkerConfig, label_pairs
from tests.support.fake_openai_server import FakeOpenAIServer, Rule, Script


def _reviser(server: FakeOpenAIServer, cache: Path, max_retries: int = 0) -> OpenAIReviser:
    return OpenAIReviser("fake-reviser", api_key="k", base_url=server.base_url,
                         retry=RetryPolicy(max_retries=max_retries, backoff_s=0.01, max_backoff_s=0.01),
                         cache=RevisionCache(cache), ledger=UsageLedger(), concurrency=8)


async def _label(pairs: list[PreferencePair], server: FakeOpenAIServer, tokenizer: PreTrainedTokenizerBase,
                 out: Path, workers: int, *, cache: Path | None = None) -> tuple[OpenAIReviser, bool]:
    reviser = _reviser(server, cache or out.with_name("cache.sqlite"))
    try:
        result = await label_pairs(pairs, reviser, tokenizer, WorkerConfig(
            out=out, tokenizer_name="tiny", concurrency=8, progress=False, workers=workers))
    finally:
        await reviser.aclose()
    return reviser, result.complete


def worker_pids(parent: int) -> set[int]:
    """Pids of the labelling worker processes whose parent is `parent` (Linux /proc)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and b"labeling.revision_processes" in (entry / "cmdline").read_bytes():
                pids.add(int(entry.name))
    return pids


def wait_until_gone(pids: set[int], timeout_s: float = 20.0) -> set[int]:
    """The pids still alive (not zombies) after waiting up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                state = "gone"
            if state in ("gone", "Z"):
                alive.discard(pid)
        time.sleep(0.05)
    return alive


async def test_two_workers_write_the_same_file_cache_and_usage_as_one_process(
        fake_llm: FakeOpenAIServer, controlled_task: object, label_tokenizer: PreTrainedTokenizerBase,
        tmp_path: Path) -> None:
    pairs = controlled_task.pairs(40, seed=11)  # type: ignore[attr-defined]
    # per-pair outcomes other than "ok" go through the workers too: an empty revision (all-negative, ok),
    # a refusal and a truncated answer (failed records)
    rules = [Rule("empty", match=pairs[1].rejected.strip()), Rule("refusal", match=pairs[2].rejected.strip()),
             Rule("truncated", match=pairs[3].rejected.strip())]
    fake_llm.set_script(Script(latency_s=0.02, rules=rules))
    one, complete_one = await _label(pairs, fake_llm, label_tokenizer, tmp_path / "one" / "labels.jsonl", 1)
    fake_llm.set_script(Script(latency_s=0.02, rules=rules))
    two, complete_two = await _label(pairs, fake_llm, label_tokenizer, tmp_path / "two" / "labels.jsonl", 2)
    assert complete_one and complete_two
    assert (tmp_path / "two" / "labels.jsonl").read_bytes() == (tmp_path / "one" / "labels.jsonl").read_bytes()
    assert fake_llm.stats()["requests"] == len(pairs)
    assert len(RevisionCache(tmp_path / "two" / "cache.sqlite")) == len(pairs)
    assert two.ledger.to_dict() == one.ledger.to_dict()
    assert two.ledger.model("fake-reviser").answers == len(pairs)
    assert not worker_pids(os.getpid())

    # a rerun on a fresh output with the same cache pays nothing: the main process reads the cache
    fake_llm.set_script(Script())
    again, _ = await _label(pairs, fake_llm, label_tokenizer, tmp_path / "again.jsonl", 2,
                            cache=tmp_path / "two" / "cache.sqlite")
    assert fake_llm.stats()["requests"] == 0 and again.ledger.model("fake-reviser").cache_hits == len(pairs)
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "one" / "labels.jsonl").read_bytes()


async def test_a_pair_out_of_retries_stays_for_the_rerun(fake_llm: FakeOpenAIServer,
                                                         controlled_pairs: list[PreferencePair],
                                                         label_tokenizer: PreTrainedTokenizerBase,
                                                         tmp_path: Path) -> None:
    victim = controlled_pairs[5]
    fake_llm.set_script(Script(rules=[Rule("500", match=victim.rejected.strip())]))
    out = tmp_path / "labels.jsonl"
    _, complete = await _label(controlled_pairs, fake_llm, label_tokenizer, out, 2)
    assert not complete and victim.id not in out.read_text()
    fake_llm.set_script(Script())
    _, complete = await _label(controlled_pairs, fake_llm, label_tokenizer, out, 2)
    assert complete and fake_llm.stats()["requests"] == 1


async def test_a_refused_key_stops_the_run_and_the_workers(fake_llm: FakeOpenAIServer,
                                                           controlled_pairs: list[PreferencePair],
                                                           label_tokenizer: PreTrainedTokenizerBase,
                                                           tmp_path: Path) -> None:
    fake_llm.set_script(Script(rules=[Rule("401")]))
    with pytest.raises(ReviserError, match="HTTP 401"):
        await _label(controlled_pairs, fake_llm, label_tokenizer, tmp_path / "labels.jsonl", 2)
    assert not wait_until_gone(worker_pids(os.getpid()))


async def test_a_worker_that_dies_stops_the_run_with_its_name(fake_llm: FakeOpenAIServer,
                                                              controlled_pairs: list[PreferencePair],
                                                              label_tokenizer: PreTrainedTokenizerBase,
                                                              tmp_path: Path) -> None:
    fake_llm.set_script(Script(latency_s=0.5))
    run = asyncio.create_task(_label(controlled_pairs, fake_llm, label_tokenizer, tmp_path / "labels.jsonl", 2))
    deadline = time.monotonic() + 60
    while len(pids := worker_pids(os.getpid())) < 2 or fake_llm.stats()["requests"] == 0:
        assert time.monotonic() < deadline, "the workers did not start"
        await asyncio.sleep(0.02)
    os.kill(min(pids), signal.SIGKILL)
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

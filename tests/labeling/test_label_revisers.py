"""Revisers; the OpenAI one through the real `openai` client against the loopback fake server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.fake_openai_server import FakeOpenAIServer, Rule, Script
from tlcr.core.data.pairs import PreferencePair
from tlcr.core.retry import RetryPolicy
from tlcr.labeling.cache import CachedAnswer, RevisionCache
from tlcr.labeling.revisers import (
    MAX_CONCURRENCY,
    ChosenReviser,
    OpenAIReviser,
    ReviserError,
    TransientReviserError,
    answer_from_completion,
)
from tlcr.labeling.usage import LedgerFile, UsageLedger

PAIR = PreferencePair(prompt="\n\nHuman: What is the capital of Kalo?\n\nAssistant:",
                      chosen=" The capital of Kalo is Tri.", rejected=" Ugh. The capital of Kalo is Ven.", id="p1")
FAST = RetryPolicy(max_retries=4, backoff_s=0.01, max_backoff_s=0.05)


def _reviser(server: FakeOpenAIServer, tmp_path: Path, retry: RetryPolicy = FAST,
             timeout_s: float = 10.0) -> OpenAIReviser:
    return OpenAIReviser("fake-reviser", api_key="test-key", base_url=server.base_url, timeout_s=timeout_s,
                         retry=retry, cache=RevisionCache(tmp_path / "cache.sqlite"), ledger=UsageLedger())


def test_completion_bodies_are_read_or_refused_as_malformed() -> None:
    body = {"model": "m-2024", "choices": [{"message": {"content": "text"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    assert answer_from_completion(body, "m") == CachedAnswer("text", "length", 7, 3, "m-2024")
    no_usage = {"choices": [{"message": {"content": None}}]}
    assert answer_from_completion(no_usage, "m") == CachedAnswer(None, None, 0, 0, "m")
    for malformed in ({}, {"choices": []}, {"choices": [{}]}, {"choices": [{"message": {"content": 3}}]},
                      {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "7"}}, "text", None):
        assert answer_from_completion(malformed, "m") is None


def test_calls_in_flight_are_bounded_by_the_connection_limit(fake_llm: FakeOpenAIServer) -> None:
    with pytest.raises(ValueError, match=f"between 1 and {MAX_CONCURRENCY}"):
        OpenAIReviser("m", api_key="k", base_url=fake_llm.base_url, concurrency=MAX_CONCURRENCY + 1)


async def test_chosen_reviser() -> None:
    revision = await ChosenReviser().revise(PAIR)
    assert revision.revision == PAIR.chosen and revision.failure is None


async def test_revision_is_paid_once_then_served_from_cache(fake_llm: FakeOpenAIServer, tmp_path: Path) -> None:
    reviser = _reviser(fake_llm, tmp_path)
    first = await reviser.revise(PAIR)
    assert first.revision == " The capital of Kalo is Tri." and first.failure is None
    assert first.reasons and "preferred" in first.reasons
    second = await reviser.revise(PAIR)
    await reviser.aclose()
    assert second == first
    assert fake_llm.stats()["requests"] == 1
    usage = reviser.ledger.by_model["fake-reviser"]
    assert (usage.answers, usage.cache_hits, usage.requests) == (1, 1, 1)
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    # a fresh reviser on the same cache file does not pay either (as after a restart)
    again = _reviser(fake_llm, tmp_path)
    assert (await again.revise(PAIR)) == first
    await again.aclose()
    assert fake_llm.stats()["requests"] == 1


async def test_retries_429_500_garbage_and_timeouts(fake_llm: FakeOpenAIServer, tmp_path: Path) -> None:
    fake_llm.set_script(Script(rules=[Rule("429", times=2), Rule("500", times=1), Rule("garbage", times=1),
                                      Rule("slow", times=1, delay_s=2.0)]))
    reviser = _reviser(fake_llm, tmp_path, retry=RetryPolicy(max_retries=6, backoff_s=0.01, max_backoff_s=0.05),
                       timeout_s=0.5)
    revision = await reviser.revise(PAIR)
    await reviser.aclose()
    assert revision.revision == " The capital of Kalo is Tri."
    usage = reviser.ledger.by_model["fake-reviser"]
    assert usage.requests == 6 and usage.retries == 5 and usage.answers == 1
    assert usage.errors == {"http_429": 2, "http_500": 1, "malformed_response": 1, "timeout": 1}
    assert fake_llm.stats()["behaviours"] == {"429": 2, "500": 1, "garbage": 1, "slow": 1, "revise": 1}


async def test_retry_after_header_is_honoured(fake_llm: FakeOpenAIServer, tmp_path: Path) -> None:
    fake_llm.set_script(Script(rules=[Rule("429", times=1, retry_after="0")]))
    # the computed backoff would be 20-40 s; Retry-After: 0 makes the retry immediate
    reviser = _reviser(fake_llm, tmp_path, retry=RetryPolicy(max_retries=1, backoff_s=40, max_backoff_s=40))
    start = time.monotonic()
    assert (await reviser.revise(PAIR)).failure is None
    await reviser.aclose()
    assert time.monotonic() - start < 10


async def test_exhausted_retries_raise_transient_and_cache_nothing(fake_llm: FakeOpenAIServer,
                                                                    tmp_path: Path) -> None:
    fake_llm.set_script(Script(rules=[Rule("500")]))
    reviser = _reviser(fake_llm, tmp_path, retry=RetryPolicy(max_retries=2, backoff_s=0.01, max_backoff_s=0.01))
    with pytest.raises(TransientReviserError, match="gave up after 3 attempts"):
        await reviser.revise(PAIR)
    await reviser.aclose()
    assert fake_llm.stats()["requests"] == 3
    assert reviser.cache is not None and len(reviser.cache) == 0


async def test_auth_error_stops_the_run(fake_llm: FakeOpenAIServer, tmp_path: Path) -> None:
    fake_llm.set_script(Script(rules=[Rule("401")]))
    reviser = _reviser(fake_llm, tmp_path)
    with pytest.raises(ReviserError, match="HTTP 401"):
        await reviser.revise(PAIR)
    await reviser.aclose()
    assert fake_llm.stats()["requests"] == 1  # no retry on a bad key


@pytest.mark.parametrize(("behaviour", "failure"), [("no_marker", "missing_marker"), ("empty", "empty_revision"),
                                                    ("refusal", "refusal"), ("truncated", "truncated_output")])
async def test_malformed_answers_are_failures_and_are_cached(fake_llm: FakeOpenAIServer, tmp_path: Path,
                                                             behaviour: str, failure: str) -> None:
    fake_llm.set_script(Script(rules=[Rule(behaviour)]))  # type: ignore[arg-type]
    reviser = _reviser(fake_llm, tmp_path)
    result = await reviser.revise(PAIR)
    assert result.revision is None and result.failure == failure
    assert (await reviser.revise(PAIR)).failure == failure  # paid once: the answer is cached
    await reviser.aclose()
    assert fake_llm.stats()["requests"] == 1


def test_ledger_file_keeps_runs_and_totals(tmp_path: Path) -> None:
    path = tmp_path / "usage.json"
    for tokens in (10, 32):
        ledger = UsageLedger()
        ledger.model("m").prompt_tokens += tokens
        ledger.model("m").answers += 1
        ledger.error("m", "timeout")
        LedgerFile(path, ledger, {"model": "m"}).save()
    import json

    doc = json.loads(path.read_text())
    assert len(doc["runs"]) == 2
    assert doc["totals"]["m"]["prompt_tokens"] == 42 and doc["totals"]["m"]["answers"] == 2
    assert doc["totals"]["m"]["errors"] == {"timeout": 2}

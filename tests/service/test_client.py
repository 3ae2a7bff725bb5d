"""The client library against real servers on loopback: splitting, retries, Retry-After, failover, checks."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import processes
from tlcr.service.client import (
    AsyncTokenRewardClient,
    RewardServiceError,
    RewardServiceUnavailable,
    TokenRewardClient,
    _Endpoints,
    parse_urls,
)
from tlcr.service.launcher import ServiceProcess
from tlcr.service.schemas import TokenRewardItem

ITEMS: list[dict[str, Any]] = [
    {"prompt": "\n\nHuman: What is the capital of Nesolland?\n\nAssistant:",
     "response": f" The capital of Nesolland is Umlodun{'.' * (i + 1)}"} for i in range(7)
]
FAST = {"backoff": 0.01, "max_backoff": 0.05}
PATIENT = {"backoff": 0.1, "max_backoff": 0.5, "max_retries": 40}  # outlasts a restart of a few seconds


# --- pure parts ---------------------------------------------------------------------------------

def test_parse_urls_accepts_one_list_or_comma_string() -> None:
    assert parse_urls("http://a:1/") == ["http://a:1"]
    assert parse_urls("http://a:1, http://b:2") == ["http://a:1", "http://b:2"]
    assert parse_urls(["http://a:1", "https://b"]) == ["http://a:1", "https://b"]
    with pytest.raises(ValueError, match="no reward service URL"):
        parse_urls(" , ")
    with pytest.raises(ValueError, match="must start with http"):
        parse_urls("localhost:8000")


def test_endpoints_pick_least_loaded_then_round_robin() -> None:
    endpoints = _Endpoints(["http://a", "http://b", "http://c"])
    with endpoints.use("http://a"), endpoints.use("http://b"):
        assert endpoints.choose(set()) == "http://c"
    picks = {endpoints.choose(set()) for _ in range(6)}
    assert picks == {"http://a", "http://b", "http://c"}
    endpoints.failed("http://a", 60.0)
    assert "http://a" not in {endpoints.choose(set()) for _ in range(6)}
    assert endpoints.choose({"http://b", "http://c"}) in ("http://b", "http://c")  # all else cooling: still one


def test_client_validates_items_before_sending(dead_url: str) -> None:
    with TokenRewardClient(dead_url) as client, pytest.raises(ValueError, match=r"items\[1\]"):
        client.token_rewards([ITEMS[0], {"prompt": "p"}])


# --- against the real service -------------------------------------------------------------------

def test_sync_client_splits_batches_and_keeps_order(shared_service: ServiceProcess) -> None:
    with TokenRewardClient(shared_service.url) as whole, \
            TokenRewardClient(shared_service.url, max_items_per_request=3) as split:
        one = whole.token_rewards(ITEMS, return_tokens=True)
        three = split.token_rewards(ITEMS, return_tokens=True)
    assert len(one) == len(three) == len(ITEMS)
    for a, b in zip(one, three, strict=True):
        assert a.tokens == b.tokens
        assert a.rewards == pytest.approx(b.rewards, abs=1e-5)
    # order is kept: the items differ by their number of trailing dots
    assert [r.tokens[-1].count(".") for r in one] == sorted(r.tokens[-1].count(".") for r in one)


def test_client_accepts_models_and_dicts_and_checks_counts(shared_service: ServiceProcess) -> None:
    with TokenRewardClient(shared_service.url) as client:
        info = client.info()
        assert client.health()
        results = client.token_rewards([
            TokenRewardItem(prompt_token_ids=[5, 6, 7], response_token_ids=[8, 9]),
            {"prompt": "Q", "response": " The capital", "response_offsets": [[0, 4], [4, 12]]},
        ], mode="fixed", threshold=0.9, return_probabilities=True)
        assert [len(r.rewards) for r in results] == [2, 2]
        assert all(v in (-1.0, 0.0, 1.0) for r in results for v in r.rewards)
        assert client.sequence_rewards([{"prompt": "Q", "response": " A"}] * 3).__len__() == 3
    assert info.max_length == 256


async def test_async_client_matches_sync(shared_service: ServiceProcess) -> None:
    async with AsyncTokenRewardClient(shared_service.url, max_items_per_request=2) as client:
        results = await client.token_rewards(ITEMS)
        assert await client.health()
        assert (await client.info()).model
        sequence = await client.sequence_rewards([{"prompt": "Q", "response": " A"}] * 5)
    with TokenRewardClient(shared_service.url) as sync_client:
        expected = sync_client.token_rewards(ITEMS)
    assert len(sequence) == 5
    for a, b in zip(results, expected, strict=True):
        assert a.rewards == pytest.approx(b.rewards, abs=1e-5)


def test_retries_5xx_then_succeeds(shared_service: ServiceProcess, proxy: Callable[..., Any]) -> None:
    server, flaky = proxy(shared_service.url, failures=3, status=500)
    with TokenRewardClient(server.url, **FAST) as client:
        results = client.token_rewards(ITEMS[:2])
    assert len(results) == 2
    assert flaky.hits == 4


def test_each_retry_is_logged_with_status_attempt_and_wait(shared_service: ServiceProcess, proxy: Callable[..., Any],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    server, _ = proxy(shared_service.url, failures=2, status=503)
    with caplog.at_level("WARNING", logger="tlcr.service.client"), TokenRewardClient(server.url, **FAST) as client:
        client.token_rewards(ITEMS[:1])
    retries = [r.getMessage() for r in caplog.records if r.name == "tlcr.service.client"]
    assert len(retries) == 2 and all(r.levelname == "WARNING" for r in caplog.records)
    assert "HTTP 503" in retries[0] and "retry 1 of 8" in retries[0] and re.search(r"in 0\.0\d s$", retries[0])
    assert server.url in retries[0] and "retry 2 of" in retries[1]


def test_gives_up_after_max_retries_naming_url_and_error(shared_service: ServiceProcess,
                                                         proxy: Callable[..., Any]) -> None:
    server, flaky = proxy(shared_service.url, failures=100, status=502)
    with TokenRewardClient(server.url, max_retries=2, **FAST) as client, \
            pytest.raises(RewardServiceUnavailable) as error:
        client.token_rewards(ITEMS[:1])
    assert flaky.hits == 3
    assert server.url in str(error.value) and "HTTP 502" in str(error.value)


def test_honours_retry_after(shared_service: ServiceProcess, proxy: Callable[..., Any]) -> None:
    server, flaky = proxy(shared_service.url, failures=1, status=503, headers={"Retry-After": "1"})
    started = time.monotonic()
    with TokenRewardClient(server.url, **FAST) as client:
        client.token_rewards(ITEMS[:1])
    assert time.monotonic() - started >= 1.0
    assert flaky.hits == 2


def test_never_retries_4xx(shared_service: ServiceProcess, proxy: Callable[..., Any]) -> None:
    server, flaky = proxy(shared_service.url, failures=5, status=422)
    with TokenRewardClient(server.url, **FAST) as client, pytest.raises(RewardServiceError) as error:
        client.token_rewards(ITEMS[:1])
    assert not isinstance(error.value, RewardServiceUnavailable)
    assert error.value.status_code == 422 and "injected failure" in str(error.value)
    assert flaky.hits == 1


def test_deadline_bounds_the_whole_call(shared_service: ServiceProcess, proxy: Callable[..., Any]) -> None:
    server, _ = proxy(shared_service.url, failures=1000, status=503)
    started = time.monotonic()
    with TokenRewardClient(server.url, max_retries=1000, backoff=0.2, max_backoff=0.2, deadline=1.0) as client, \
            pytest.raises(RewardServiceUnavailable):
        client.token_rewards(ITEMS[:1])
    assert time.monotonic() - started < 3.0


def test_rejects_results_without_one_reward_per_token(shared_service: ServiceProcess,
                                                      proxy: Callable[..., Any]) -> None:
    def drop_last_reward(body: dict[str, Any]) -> dict[str, Any]:
        body["results"][0]["rewards"] = body["results"][0]["rewards"][:-1]
        return body

    server, _ = proxy(shared_service.url, rewrite=drop_last_reward)
    with TokenRewardClient(server.url, **FAST) as client, pytest.raises(RewardServiceError, match="2 rewards for 3"):
        client.token_rewards([{"prompt_token_ids": [5], "response_token_ids": [6, 7, 8]}])


def test_fails_over_to_a_live_url(shared_service: ServiceProcess, dead_url: str) -> None:
    with TokenRewardClient([dead_url, shared_service.url], **FAST) as client:
        for _ in range(4):  # whichever URL is chosen first, every call succeeds
            assert len(client.token_rewards(ITEMS[:2])) == 2
        assert client.ready_urls() == [shared_service.url]


async def test_async_client_spreads_load_over_urls(shared_service: ServiceProcess,
                                                   proxy: Callable[..., Any]) -> None:
    (first, first_app), (second, second_app) = proxy(shared_service.url), proxy(shared_service.url)
    async with AsyncTokenRewardClient([first.url, second.url], max_items_per_request=1) as client:
        results = await client.token_rewards(ITEMS * 2)
    assert len(results) == 2 * len(ITEMS)
    assert first_app.hits >= 3 and second_app.hits >= 3
    assert first_app.hits + second_app.hits == 2 * len(ITEMS)


async def test_async_client_retries(shared_service: ServiceProcess, proxy: Callable[..., Any]) -> None:
    server, flaky = proxy(shared_service.url, failures=2, status=503)
    async with AsyncTokenRewardClient(server.url, **FAST) as client:
        assert len(await client.token_rewards(ITEMS[:3])) == 3
    assert flaky.hits == 3


def test_rides_out_a_restart_on_the_same_port(in_process_service: Callable[..., Any]) -> None:
    """The service goes away (connection refused), comes back (loading: 503), then answers."""
    first = in_process_service()
    with TokenRewardClient(first.url, **PATIENT) as client:
        before = client.token_rewards(ITEMS[:2])
        first.stop()
        restarted: list[Any] = []
        timer = threading.Timer(1.0, lambda: restarted.append(in_process_service(port=first.port)))
        timer.start()
        try:
            after = client.token_rewards(ITEMS[:2])
        finally:
            timer.join()
    assert restarted, "the service was not restarted"
    for a, b in zip(before, after, strict=True):
        assert a.rewards == pytest.approx(b.rewards, abs=1e-6)


async def test_async_client_rides_out_a_restart(in_process_service: Callable[..., Any]) -> None:
    first = in_process_service()
    first.stop()
    loop = asyncio.get_running_loop()
    restart = loop.run_in_executor(None, lambda: (time.sleep(0.5), in_process_service(port=first.port)))
    async with AsyncTokenRewardClient(first.url, **PATIENT) as client:
        results = await client.token_rewards(ITEMS[:3])
    await restart
    assert len(results) == 3


def test_client_and_launcher_import_without_torch() -> None:
    import sys

    code = ("import sys, service.client, service.launcher, service.schemas; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    processes.run([sys.executable, "-c", code], check=True, timeout=60)

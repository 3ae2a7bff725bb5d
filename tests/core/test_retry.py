"""The one retry policy shared by the reviser and the reward client: backoff, jitter, Retry-After, logging."""

from __future__ import annotations

import logging
import random

import pytest

from tlcr.core.retry import RetryPolicy, log_retry, retry_after_seconds


def test_backoff_grows_exponentially_with_equal_jitter_and_a_cap() -> None:
    policy = RetryPolicy(backoff_s=0.5, max_backoff_s=30.0)
    rng = random.Random(0)
    for retry, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 30.0), (5000, 30.0)]:
        delays = [policy.delay(retry, rng=rng) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays)
        assert max(delays) - min(delays) > cap / 4  # jittered, not constant


def test_retry_after_replaces_the_backoff_up_to_its_own_cap() -> None:
    policy = RetryPolicy(backoff_s=40.0, max_backoff_s=40.0, max_retry_after_s=120.0)
    assert policy.delay(0, retry_after_s=0.0) == 0.0
    assert policy.delay(3, retry_after_s=2.5) == 2.5
    assert policy.delay(0, retry_after_s=90.0) == 90.0  # longer than the backoff cap: the server knows best
    assert policy.delay(0, retry_after_s=86400.0) == 120.0
    assert policy.delay(0, retry_after_s=-5.0) == 0.0


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("") is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412500.0) == 0.0  # already past


@pytest.mark.parametrize("kwargs", [{"max_retries": -1}, {"backoff_s": -0.1}, {"max_backoff_s": -1.0},
                                    {"max_retry_after_s": -1.0}])
def test_a_bad_policy_is_refused_naming_the_field(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_each_retry_is_one_warning_with_error_attempt_and_wait(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tlcr.test_retry")
    with caplog.at_level("WARNING", logger=logger.name):
        log_retry(logger, "reviser openai:m, pair p1", "HTTP 429", 2, 6, 1.25)
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    assert record.getMessage() == "reviser openai:m, pair p1 failed (HTTP 429); retry 2 of 6 in 1.25 s"

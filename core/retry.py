"""The one retry policy of the project's HTTP clients: the reviser (labeling) and the reward client (service).

What is retried (statuses, errors) is each client's business; how long to wait, and how a retry is
reported, is decided here:
- exponential backoff with "equal jitter": retry k waits half of min(max_backoff_s, backoff_s * 2**k)
  plus up to as much again, so clients that failed together do not come back together;
- a `Retry-After` from the server (delta seconds or an HTTP date) replaces the backoff, even when longer
  than `max_backoff_s` (the server knows when it will take calls again), up to `max_retry_after_s` so a
  wrong header cannot park a run for hours;
- every retry is logged at warning level with what failed, the error (status), the attempt and the wait.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass

# 2**64 seconds is far beyond any cap; a larger exponent would only risk a float overflow.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class RetryPolicy:
    """How many retries after the first attempt, and the backoff between them (seconds)."""

    max_retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_retry_after_s: float = 600.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        for name in ("backoff_s", "max_backoff_s", "max_retry_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """The jittered wait before retry number `retry` (0 = the first retry)."""
        cap = min(self.max_backoff_s, self.backoff_s * 2.0 ** min(retry, _MAX_EXPONENT))
        return cap / 2.0 + (rng or random).uniform(0.0, cap / 2.0)

    def delay(self, retry: int, retry_after_s: float | None = None, rng: random.Random | None = None) -> float:
        """The wait before retry number `retry`: the server's Retry-After if it sent one, else the backoff."""
        if retry_after_s is not None:
            return min(self.max_retry_after_s, max(0.0, retry_after_s))
        return self.backoff(retry, rng)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (delta seconds or HTTP date) as seconds from now; None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def log_retry(logger: logging.Logger, what: str, error: str, retry: int, max_retries: int, delay: float) -> None:
    """One warning per retry: what failed, why (e.g. "HTTP 429: ..."), which retry of how many, the wait."""
    logger.warning("%s failed (%s); retry %d of %d in %.2f s", what, error, retry, max_retries, delay)

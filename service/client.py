"""Client of the reward service, sync and async (httpx); used by trainer/ and by anyone's own trainer.

Importable without torch: it needs only httpx, pydantic and `tlcr.service.schemas` (the one definition of the
HTTP contract, shared with the service).

What it does for the caller:
- splits a large batch into requests of at most `max_items_per_request` items (the async client sends
  them concurrently) and returns one result per item, in order;
- retries connection errors, timeouts, 5xx, 408 and 429 and 503 (honouring `Retry-After`) with
  exponential backoff and jitter (the project's one policy, `tlcr.core.retry`, each retry a logged warning),
  within `max_retries` and a total `deadline` per call; never a 4xx
  (those raise `RewardServiceError` with the service's message at once);
- spreads requests over several URLs, least-loaded first (fewest requests in flight from this client,
  round-robin among equals), and fails over: a URL that just failed cools down while others are tried;
- checks each result: one reward per token sent (ids, or offsets), and as many probabilities/tokens.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from tlcr.core.retry import RetryPolicy, log_retry, retry_after_seconds
from tlcr.service.schemas import (
    InfoResponse,
    RewardMode,
    SequenceRewardItem,
    SequenceRewardsRequest,
    SequenceRewardsResponse,
    TokenRewardItem,
    TokenRewardResult,
    TokenRewardsRequest,
    TokenRewardsResponse,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AsyncTokenRewardClient",
    "RewardServiceError",
    "RewardServiceUnavailable",
    "TokenRewardClient",
]

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
HEALTH_TIMEOUT = 5.0

Model = TypeVar("Model", bound=BaseModel)


class RewardServiceError(RuntimeError):
    """The service refused a request (a 4xx: bad request, never retried) or broke the contract."""

    def __init__(self, message: str, status_code: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.url = url


class RewardServiceUnavailable(RewardServiceError):
    """Retries or the deadline ran out; the message names the URLs tried and the last error."""


def parse_urls(urls: str | Sequence[str]) -> list[str]:
    """One URL, a list, or a comma-separated string → base URLs without a trailing slash."""
    raw = urls.split(",") if isinstance(urls, str) else list(urls)
    parsed = [u.strip().rstrip("/") for u in raw if u and u.strip()]
    if not parsed:
        raise ValueError("no reward service URL given")
    for url in parsed:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"reward service URL {url!r} must start with http:// or https://")
    return parsed


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:500]


class _Endpoints:
    """The service URLs with this client's requests in flight per URL and a cool-down after failures."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = list(urls)
        self._in_flight = dict.fromkeys(self.urls, 0)
        self._cool_until = dict.fromkeys(self.urls, 0.0)
        self._turn = 0
        self._lock = threading.Lock()

    def choose(self, avoid: set[str]) -> str:
        """Least-loaded URL that is neither cooling down nor in `avoid`; relaxing those rules if none is."""
        now = time.monotonic()
        with self._lock:
            self._turn += 1
            rotated = self.urls[self._turn % len(self.urls):] + self.urls[: self._turn % len(self.urls)]
            for usable in (lambda u: u not in avoid and self._cool_until[u] <= now,
                           lambda u: self._cool_until[u] <= now,
                           lambda u: u not in avoid,
                           lambda u: True):
                candidates = [u for u in rotated if usable(u)]
                if candidates:
                    # min() keeps the first of equals: rotation makes ties round-robin.
                    return min(candidates, key=lambda u: self._in_flight[u])
        raise AssertionError("unreachable: the last rule accepts every URL")

    def any_usable(self, avoid: set[str]) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(u not in avoid and self._cool_until[u] <= now for u in self.urls)

    @contextmanager
    def use(self, url: str) -> Iterator[None]:
        with self._lock:
            self._in_flight[url] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[url] -= 1

    def failed(self, url: str, cool_down: float) -> None:
        with self._lock:
            self._cool_until[url] = time.monotonic() + cool_down

    def succeeded(self, url: str) -> None:
        with self._lock:
            self._cool_until[url] = 0.0


@dataclass
class _Done:
    response: httpx.Response


@dataclass
class _Retry:
    delay: float


class _Attempts:
    """The retry policy of one call: shared by the sync and the async client (no I/O here)."""

    def __init__(self, client: _ClientBase, path: str) -> None:
        self.client = client
        self.path = path
        self.started = time.monotonic()
        self.retries = 0
        self.tried: set[str] = set()
        self.last_error = "no attempt made"

    def remaining(self) -> float | None:
        if self.client.deadline is None:
            return None
        return self.client.deadline - (time.monotonic() - self.started)

    def choose(self) -> tuple[str, float]:
        """(URL to try, timeout for this attempt)."""
        url = self.client.endpoints.choose(self.tried)
        self.tried.add(url)
        remaining = self.remaining()
        timeout = self.client.timeout if remaining is None else max(0.001, min(self.client.timeout, remaining))
        return url, timeout

    def _give_up(self) -> RewardServiceUnavailable:
        urls = ", ".join(self.client.endpoints.urls)
        spent = time.monotonic() - self.started
        return RewardServiceUnavailable(
            f"reward service unavailable after {self.retries + 1} attempts in {spent:.1f} s "
            f"(POST/GET {self.path} on {urls}); last error: {self.last_error}")

    def _retry(self, url: str, error: str, retry_after: float | None) -> _Retry:
        self.last_error = f"{url}{self.path}: {error}"
        if self.retries >= self.client.retry.max_retries:
            raise self._give_up()
        delay = self.client.retry.delay(self.retries, retry_after, self.client.rng)
        self.retries += 1
        self.client.endpoints.failed(url, delay)
        if self.client.endpoints.any_usable(avoid={url}):
            delay = 0.0  # another URL is ready to take the call now: fail over without waiting
        remaining = self.remaining()
        if remaining is not None and delay >= remaining:
            raise self._give_up()
        log_retry(logger, f"reward service {url}{self.path}", error, self.retries, self.client.retry.max_retries,
                  delay)
        return _Retry(delay)

    def transport_error(self, url: str, exc: Exception) -> _Retry:
        return self._retry(url, f"{type(exc).__name__}: {exc or 'no message'}", None)

    def response(self, url: str, response: httpx.Response) -> _Done | _Retry:
        status = response.status_code
        if status < 400:
            self.client.endpoints.succeeded(url)
            return _Done(response)
        if status in RETRYABLE_STATUSES:
            return self._retry(url, f"HTTP {status}: {_detail(response)}",
                               retry_after_seconds(response.headers.get("retry-after")))
        raise RewardServiceError(f"reward service refused {self.path} (HTTP {status} from {url}): "
                                 f"{_detail(response)}", status_code=status, url=url)


def _validated_item(model: type[Model], item: Model | dict[str, Any], index: int, what: str) -> Model:
    """`item` as `model`, or a ValueError naming its index, before anything is sent."""
    if isinstance(item, model):
        return item
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        raise ValueError(f"items[{index}] is not a valid {what} item: {exc}") from exc


def check_token_results(items: Sequence[TokenRewardItem], response: TokenRewardsResponse, offset: int,
                        url_hint: str) -> list[TokenRewardResult]:
    """One result per item and one reward per token sent; names the first item that breaks this."""
    if len(response.results) != len(items):
        raise RewardServiceError(f"{url_hint}: {len(response.results)} results for {len(items)} items")
    for i, (item, result) in enumerate(zip(items, response.results, strict=True)):
        where = f"{url_hint}: items[{offset + i}]"
        if item.response_token_ids is not None:
            expected: int | None = len(item.response_token_ids)
        elif item.response_offsets is not None:
            expected = len(item.response_offsets)
        else:
            expected = None
        if expected is not None and len(result.rewards) != expected:
            raise RewardServiceError(f"{where}: {len(result.rewards)} rewards for {expected} tokens sent")
        if not result.rewards:
            raise RewardServiceError(f"{where}: no rewards returned")
        for name in ("probabilities", "tokens"):
            values = getattr(result, name)
            if values is not None and len(values) != len(result.rewards):
                raise RewardServiceError(f"{where}: {len(values)} {name} for {len(result.rewards)} rewards")
    return list(response.results)


def _chunks(count: int, size: int) -> list[range]:
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


class _ClientBase:
    def __init__(self, urls: str | Sequence[str], api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 8, backoff: float = 0.5, max_backoff: float = 30.0,
                 deadline: float | None = 600.0, max_items_per_request: int = 64) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if max_items_per_request < 1:
            raise ValueError(f"max_items_per_request must be >= 1, got {max_items_per_request}")
        if deadline is not None and deadline <= 0:
            raise ValueError(f"deadline must be positive or None, got {deadline}")
        self.endpoints = _Endpoints(parse_urls(urls))
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries=max_retries, backoff_s=backoff, max_backoff_s=max_backoff)
        self.deadline = deadline
        self.max_items_per_request = max_items_per_request
        self.rng = random.Random()
        self.headers = {"Accept": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._http = self._make_http()

    def _make_http(self) -> httpx.Client | httpx.AsyncClient:
        raise NotImplementedError

    @property
    def urls(self) -> list[str]:
        return list(self.endpoints.urls)

    def _token_requests(self, items: Sequence[TokenRewardItem | dict[str, Any]], mode: RewardMode | str,
                        threshold: float, return_probabilities: bool,
                        return_tokens: bool) -> tuple[list[TokenRewardItem], list[tuple[range, bytes]]]:
        parsed = [_validated_item(TokenRewardItem, item, i, "token-reward") for i, item in enumerate(items)]
        bodies = []
        for chunk in _chunks(len(parsed), self.max_items_per_request):
            request = TokenRewardsRequest(items=parsed[chunk.start: chunk.stop], mode=RewardMode(mode),
                                          threshold=threshold, return_probabilities=return_probabilities,
                                          return_tokens=return_tokens)
            bodies.append((chunk, request.model_dump_json(exclude_none=True).encode()))
        return parsed, bodies

    def _sequence_requests(self, items: Sequence[SequenceRewardItem | dict[str, Any]]) -> list[tuple[range, bytes]]:
        parsed = [_validated_item(SequenceRewardItem, item, i, "sequence-reward") for i, item in enumerate(items)]
        return [(chunk, SequenceRewardsRequest(items=parsed[chunk.start: chunk.stop])
                 .model_dump_json().encode()) for chunk in _chunks(len(parsed), self.max_items_per_request)]

    @staticmethod
    def _parse(model: type[Model], response: httpx.Response, path: str) -> Model:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise RewardServiceError(f"{response.request.url}: the response to {path} does not match the contract: "
                                     f"{exc}", url=str(response.request.url)) from exc

    @staticmethod
    def _check_sequence(response: SequenceRewardsResponse, chunk: range) -> list[float]:
        if len(response.rewards) != len(chunk):
            raise RewardServiceError(f"/sequence_rewards returned {len(response.rewards)} rewards for "
                                     f"{len(chunk)} items")
        return list(response.rewards)


class TokenRewardClient(_ClientBase):
    """Blocking client (thread-safe). Use as a context manager or call `close()`."""

    _http: httpx.Client

    def _make_http(self) -> httpx.Client:
        return httpx.Client(headers=self.headers)

    def _call(self, method: str, path: str, body: bytes | None = None) -> httpx.Response:
        attempts = _Attempts(self, path)
        headers = {"Content-Type": "application/json"} if body is not None else None
        while True:
            url, timeout = attempts.choose()
            with self.endpoints.use(url):
                try:
                    response = self._http.request(method, url + path, content=body, headers=headers,
                                                  timeout=timeout)
                except httpx.TransportError as exc:
                    outcome: _Done | _Retry = attempts.transport_error(url, exc)
                else:
                    outcome = attempts.response(url, response)
            if isinstance(outcome, _Done):
                return outcome.response
            time.sleep(outcome.delay)

    def token_rewards(self, items: Sequence[TokenRewardItem | dict[str, Any]],
                      mode: RewardMode | str = "continuous", threshold: float = 0.6,
                      return_probabilities: bool = False, return_tokens: bool = False) -> list[TokenRewardResult]:
        """One result per item, in order: rewards of the response tokens (the caller's, with offsets)."""
        parsed, bodies = self._token_requests(items, mode, threshold, return_probabilities, return_tokens)
        results: list[TokenRewardResult] = []
        for chunk, body in bodies:
            response = self._call("POST", "/token_rewards", body)
            parsed_response = self._parse(TokenRewardsResponse, response, "/token_rewards")
            results += check_token_results(parsed[chunk.start: chunk.stop], parsed_response, chunk.start,
                                           str(response.request.url))
        return results

    def sequence_rewards(self, items: Sequence[SequenceRewardItem | dict[str, Any]]) -> list[float]:
        """One scalar per (prompt, response) from the service's sequence reward model."""
        rewards: list[float] = []
        for chunk, body in self._sequence_requests(items):
            response = self._call("POST", "/sequence_rewards", body)
            rewards += self._check_sequence(self._parse(SequenceRewardsResponse, response, "/sequence_rewards"),
                                            chunk)
        return rewards

    def info(self) -> InfoResponse:
        return self._parse(InfoResponse, self._call("GET", "/info"), "/info")

    def ready_urls(self) -> list[str]:
        """The URLs whose GET /readyz answers 200 now (no retries)."""
        ready = []
        for url in self.endpoints.urls:
            try:
                if self._http.get(url + "/readyz", timeout=min(self.timeout, HEALTH_TIMEOUT)).status_code == 200:
                    ready.append(url)
            except httpx.TransportError:
                pass
        return ready

    def health(self) -> bool:
        """True when at least one URL is ready (GET /readyz)."""
        return bool(self.ready_urls())

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.2) -> None:
        """Block until some URL is ready; RewardServiceUnavailable after `timeout` seconds."""
        stop = time.monotonic() + timeout
        while not self.health():
            if time.monotonic() >= stop:
                raise RewardServiceUnavailable(f"no reward service ready within {timeout:g} s at "
                                               f"{', '.join(self.endpoints.urls)}")
            time.sleep(interval)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TokenRewardClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncTokenRewardClient(_ClientBase):
    """asyncio client; a large batch's requests go out concurrently. `async with` or `await close()`."""

    _http: httpx.AsyncClient

    def _make_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=self.headers)

    async def _call(self, method: str, path: str, body: bytes | None = None) -> httpx.Response:
        attempts = _Attempts(self, path)
        headers = {"Content-Type": "application/json"} if body is not None else None
        while True:
            url, timeout = attempts.choose()
            with self.endpoints.use(url):
                try:
                    response = await self._http.request(method, url + path, content=body, headers=headers,
                                                        timeout=timeout)
                except httpx.TransportError as exc:
                    outcome: _Done | _Retry = attempts.transport_error(url, exc)
                else:
                    outcome = attempts.response(url, response)
            if isinstance(outcome, _Done):
                return outcome.response
            await asyncio.sleep(outcome.delay)

    async def token_rewards(self, items: Sequence[TokenRewardItem | dict[str, Any]],
                            mode: RewardMode | str = "continuous", threshold: float = 0.6,
                            return_probabilities: bool = False,
                            return_tokens: bool = False) -> list[TokenRewardResult]:
        """One result per item, in order; the batch's requests run concurrently."""
        parsed, bodies = self._token_requests(items, mode, threshold, return_probabilities, return_tokens)

        async def one(chunk: range, body: bytes) -> list[TokenRewardResult]:
            response = await self._call("POST", "/token_rewards", body)
            return check_token_results(parsed[chunk.start: chunk.stop],
                                       self._parse(TokenRewardsResponse, response, "/token_rewards"),
                                       chunk.start, str(response.request.url))

        parts = await asyncio.gather(*(one(chunk, body) for chunk, body in bodies))
        return [result for part in parts for result in part]

    async def sequence_rewards(self, items: Sequence[SequenceRewardItem | dict[str, Any]]) -> list[float]:
        async def one(chunk: range, body: bytes) -> list[float]:
            response = await self._call("POST", "/sequence_rewards", body)
            return self._check_sequence(self._parse(SequenceRewardsResponse, response, "/sequence_rewards"), chunk)

        parts = await asyncio.gather(*(one(chunk, body) for chunk, body in self._sequence_requests(items)))
        return [reward for part in parts for reward in part]

    async def info(self) -> InfoResponse:
        return self._parse(InfoResponse, await self._call("GET", "/info"), "/info")

    async def ready_urls(self) -> list[str]:
        async def ready(url: str) -> bool:
            try:
                response = await self._http.get(url + "/readyz", timeout=min(self.timeout, HEALTH_TIMEOUT))
            except httpx.TransportError:
                return False
            return response.status_code == 200

        flags = await asyncio.gather(*(ready(u) for u in self.endpoints.urls))
        return [u for u, ok in zip(self.endpoints.urls, flags, strict=True) if ok]

    async def health(self) -> bool:
        return bool(await self.ready_urls())

    async def wait_ready(self, timeout: float = 120.0, interval: float = 0.2) -> None:
        stop = time.monotonic() + timeout
        while not await self.health():
            if time.monotonic() >= stop:
                raise RewardServiceUnavailable(f"no reward service ready within {timeout:g} s at "
                                               f"{', '.join(self.endpoints.urls)}")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTokenRewardClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

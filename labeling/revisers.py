"""Revisers: what produces the minimally revised rejected response, behind one interface.

- `OpenAIReviser`: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama...) through
  `openai.AsyncOpenAI`, with an explicit retry policy, a per-call timeout, the on-disk cache and the
  usage ledger.
- `ChosenReviser`: offline; the revision is the chosen response (the offline default, exact for the
  controlled task whose chosen response is the minimal fix of the rejected one).
- `GivenReviser`: revisions already present in the input (see `labeling.given_input`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
from dataclasses import dataclass
from typing import Protocol

import openai
from openai.types.chat import ChatCompletion

from labeling.cache import CachedAnswer, RevisionCache, cache_key
from labeling.instruction import EMPTY_REVISION, INSTRUCTION_VERSION, build_messages, parse_revision
from labeling.usage import UsageLedger
from tlcr.data.pairs import PreferencePair

log = logging.getLogger(__name__)

NO_GIVEN_REVISION = "no_given_revision"


class ReviserError(RuntimeError):
    """A failure no retry can fix (bad API key, unknown model): the whole run stops."""


class TransientReviserError(RuntimeError):
    """Retries exhausted on 429 / 5xx / timeouts: the pair stays unlabelled and a rerun retries it."""


@dataclass(frozen=True)
class Revision:
    """A reviser's result for one pair: the revision, or the failure reason (then `revision` is None)."""

    revision: str | None
    failure: str | None = None
    reasons: str | None = None


class Reviser(Protocol):
    name: str                 # recorded in each labelled record as "reviser"
    instruction_version: str  # recorded as "instruction_version"

    async def revise(self, pair: PreferencePair) -> Revision: ...

    async def aclose(self) -> None: ...


class ChosenReviser:
    """Revision := chosen response. Exact for the controlled task; for HH data it is rarely minimal."""

    name = "chosen"
    instruction_version = "none"

    async def revise(self, pair: PreferencePair) -> Revision:
        if not pair.chosen.strip():
            return Revision(None, EMPTY_REVISION)
        return Revision(pair.chosen)

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class GivenRevision:
    """A revision from the input: either the revision text itself, or a raw reviser answer to parse."""

    revision: str | None = None
    raw_output: str | None = None


class GivenReviser:
    """Revisions supplied with the input, looked up by pair id."""

    name = "given"

    def __init__(self, revisions: dict[str, GivenRevision], instruction_version: str = "given") -> None:
        self.revisions = revisions
        self.instruction_version = instruction_version

    async def revise(self, pair: PreferencePair) -> Revision:
        given = self.revisions.get(pair.id)
        if given is None:
            return Revision(None, NO_GIVEN_REVISION)
        if given.raw_output is not None:
            parsed = parse_revision(given.raw_output, pair.rejected)
            return Revision(parsed.revision, parsed.failure, parsed.reasons)
        if given.revision is None:
            return Revision(None, NO_GIVEN_REVISION)
        if not given.revision.strip():
            return Revision(None, EMPTY_REVISION)
        return Revision(given.revision)  # verbatim: relabelling a labelled file must not alter it

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: attempt k waits min(max_backoff_s, backoff_s * 2**k), with jitter in [0.5, 1]."""

    max_retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        if retry_after_s is not None:  # the server said how long to wait: trust it, within the cap
            return min(self.max_backoff_s, max(0.0, retry_after_s))
        return min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)


CONNECTIONS_PER_CLIENT = 8

# HTTP statuses retried as transient; other 4xx are either fatal (auth, model) or a per-pair failure.
RETRIABLE_STATUS = frozenset({408, 409, 429})
FATAL_STATUS = frozenset({401, 403, 404})


def _retry_after_seconds(exc: openai.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAIReviser:
    """Revisions from an OpenAI-compatible chat-completions endpoint.

    The openai client's own retries are off (max_retries=0) so the policy here is the only one: retry
    429 / 408 / 409 / 5xx / timeouts / connection errors with exponential backoff, stop the run on
    401 / 403 / 404, and record any other 4xx as a failed pair. Each call has a hard deadline of
    `timeout_s`. Paid answers go to the cache before anything else happens with them.
    """

    instruction_version = INSTRUCTION_VERSION

    def __init__(self, model: str, *, api_key: str, base_url: str | None = None, timeout_s: float = 60.0,
                 retry: RetryPolicy | None = None, temperature: float | None = 0.0,
                 max_tokens: int | None = None, cache: RevisionCache | None = None,
                 ledger: UsageLedger | None = None, concurrency: int = 8) -> None:
        self.model = model
        self.name = f"openai:{model}"
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.cache = cache
        self.ledger = ledger or UsageLedger()
        # One client per CONNECTIONS_PER_CLIENT calls in flight, used in turn. Why: an HTTP connection
        # pool rescans all its idle connections (a socket poll each) whenever a request starts or ends,
        # so one pool serving 64 calls that finish together spends O(64^2) work per wave; at high
        # concurrency that was ~20% of the CPU of a run. The client's own timeout is a backstop;
        # asyncio.wait_for below enforces the per-call deadline.
        n_clients = max(1, -(-concurrency // CONNECTIONS_PER_CLIENT))
        self.clients = [openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0,
                                           timeout=timeout_s + 5.0) for _ in range(n_clients)]
        self._turn = itertools.count()

    def key(self, pair: PreferencePair) -> str:
        return cache_key(self.model, self.instruction_version, pair.prompt, pair.chosen, pair.rejected)

    async def revise(self, pair: PreferencePair) -> Revision:
        key = self.key(pair)
        answer = self.cache.get(key) if self.cache is not None else None
        usage = self.ledger.model(self.model)
        if answer is not None:
            usage.cache_hits += 1
        else:
            result = await self._call_with_retries(pair)
            if isinstance(result, Revision):  # a per-pair API failure (e.g. 400: context too long)
                return result
            answer = result
            if self.cache is not None:
                self.cache.put(key, answer)
        parsed = parse_revision(answer.output, pair.rejected, finish_reason=answer.finish_reason)
        return Revision(parsed.revision, parsed.failure, parsed.reasons)

    async def _call_with_retries(self, pair: PreferencePair) -> CachedAnswer | Revision:
        usage = self.ledger.model(self.model)
        body: dict[str, object] = {"model": self.model, "messages": build_messages(pair)}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        last_error = ""
        for attempt in range(self.retry.max_retries + 1):
            if attempt:
                usage.retries += 1
            usage.requests += 1
            retry_after: float | None = None
            try:
                # The client's generic POST: the same auth, errors and ChatCompletion parsing as
                # `chat.completions.create`, without its recursive TypedDict transform of the request,
                # which costs ~0.5 ms of CPU per call and is moot for plain string messages.
                client = self.clients[next(self._turn) % len(self.clients)]
                response = await asyncio.wait_for(
                    client.post("/chat/completions", cast_to=ChatCompletion, body=body),
                    timeout=self.timeout_s)
            except (asyncio.TimeoutError, openai.APITimeoutError):
                last_error = "timeout"
            except openai.APIConnectionError as exc:
                last_error = f"connection ({exc.__class__.__name__})"
            except openai.APIStatusError as exc:
                status = exc.status_code
                if status in FATAL_STATUS:
                    self.ledger.error(self.model, f"http_{status}")
                    raise ReviserError(f"{self.name}: HTTP {status} from the endpoint ({_short(exc)}); "
                                       "check the API key, base URL and model name") from exc
                if status not in RETRIABLE_STATUS and status < 500:
                    self.ledger.error(self.model, f"http_{status}")
                    return Revision(None, f"api_error_{status}")
                last_error = f"http_{status}"
                retry_after = _retry_after_seconds(exc)
            except (openai.APIResponseValidationError, json.JSONDecodeError):
                # a 200 whose body is not a completion (proxy glitch, overloaded server): retry
                last_error = "malformed_response"
            else:
                if not response.choices:
                    last_error = "malformed_response"
                else:
                    usage.answers += 1
                    if response.usage is not None:
                        usage.prompt_tokens += response.usage.prompt_tokens or 0
                        usage.completion_tokens += response.usage.completion_tokens or 0
                    choice = response.choices[0]
                    return CachedAnswer(
                        output=choice.message.content, finish_reason=choice.finish_reason,
                        prompt_tokens=response.usage.prompt_tokens if response.usage else 0,
                        completion_tokens=response.usage.completion_tokens if response.usage else 0,
                        model=response.model or self.model)
            self.ledger.error(self.model, last_error.split(" ")[0])
            if attempt < self.retry.max_retries:
                delay = self.retry.delay(attempt, retry_after)
                log.debug("pair %s: %s, retry %d in %.2fs", pair.id, last_error, attempt + 1, delay)
                await asyncio.sleep(delay)
        raise TransientReviserError(f"pair {pair.id}: gave up after {self.retry.max_retries + 1} attempts "
                                    f"(last error: {last_error})")

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()


def _short(exc: openai.APIStatusError) -> str:
    text = str(exc.message if hasattr(exc, "message") else exc)
    return text if len(text) <= 200 else text[:200] + "..."

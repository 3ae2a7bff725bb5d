"""Revisers: what produces the minimally revised rejected response, behind one interface.

- `OpenAIReviser`: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama...) through
  `openai.AsyncOpenAI`, with the project's retry policy (`tlcr.core.retry`), a per-call timeout, the on-disk
  cache and the usage ledger.
- `ChosenReviser`: offline; the revision is the chosen response (the offline default, exact for the
  controlled task whose chosen response is the minimal fix of the rejected one).
- `GivenReviser`: revisions already present in the input (see `tlcr.labeling.given_input`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

import openai

from tlcr.core.data.pairs import PreferencePair
from tlcr.core.retry import RetryPolicy, log_retry, retry_after_seconds
from tlcr.labeling.cache import CachedAnswer, RevisionCache, cache_key
from tlcr.labeling.instruction import EMPTY_REVISION, INSTRUCTION_VERSION, build_messages, parse_revision
from tlcr.labeling.reviser_context import PromptBudget, prompt_budget
from tlcr.labeling.usage import UsageLedger, cut_message

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
    detail: str | None = None  # the record's reason_detail: the endpoint's error message, or an unusable answer's start


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


# openai's DefaultAioHttpClient allows 1,000 connections (its DEFAULT_CONNECTION_LIMITS) and aiohttp keeps
# every one alive: more calls in flight than that would queue for a connection.
MAX_CONCURRENCY = 1000

# HTTP statuses retried as transient; other 4xx are either fatal (auth, model) or a per-pair failure.
RETRIABLE_STATUS = frozenset({408, 409, 429})
FATAL_STATUS = frozenset({401, 403, 404})


def answer_from_completion(data: object, model: str) -> CachedAnswer | None:
    """The answer in a chat-completion body (parsed JSON), or None when the body is not one."""
    try:
        choice = data["choices"][0]  # type: ignore[index]
        content, finish_reason = choice["message"]["content"], choice.get("finish_reason")
        usage = data.get("usage") or {}  # type: ignore[attr-defined]
        prompt_tokens, completion_tokens = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
        answered_by = data.get("model") or model  # type: ignore[attr-defined]
    except (TypeError, KeyError, IndexError, AttributeError):
        return None
    if not (isinstance(content, str | None) and isinstance(finish_reason, str | None)
            and isinstance(prompt_tokens, int) and isinstance(completion_tokens, int)):
        return None
    return CachedAnswer(output=content, finish_reason=finish_reason, prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens, model=str(answered_by))


ANSWER_DETAIL_CHARS = 200  # how much of an unusable answer a failed record keeps in reason_detail


def revision_from_answer(answer: CachedAnswer, pair: PreferencePair) -> Revision:
    parsed = parse_revision(answer.output, pair.rejected, finish_reason=answer.finish_reason)
    detail = None
    if parsed.revision is None and parsed.failure != EMPTY_REVISION and answer.output and answer.output.strip():
        detail = "the answer began: " + cut_message(answer.output, ANSWER_DETAIL_CHARS)  # what the model said
    return Revision(parsed.revision, parsed.failure, parsed.reasons, detail)


@dataclass(frozen=True)
class OpenAISettings:
    """The endpoint and call settings of an OpenAIReviser (picklable: sent to worker processes)."""

    model: str
    api_key: str = field(repr=False)  # never in a log line or traceback
    base_url: str | None
    timeout_s: float
    retry: RetryPolicy
    temperature: float | None
    max_tokens: int | None

    def reviser(self, concurrency: int) -> OpenAIReviser:
        """A reviser making these calls, without cache (its caller keeps one) and with a ledger of its own."""
        return OpenAIReviser(self.model, api_key=self.api_key, base_url=self.base_url, timeout_s=self.timeout_s,
                             retry=self.retry, temperature=self.temperature, max_tokens=self.max_tokens,
                             concurrency=concurrency)


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
        self.budget: PromptBudget | None = None  # set by find_budget: pairs that cannot fit are not sent
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, got {concurrency}")
        # openai's aiohttp transport, not its default httpx one. Why: in benchmarks/labeling.py the httpx
        # stack cost ~1.3 ms of CPU per call, and its connection pool rescans every connection whenever a
        # request starts or ends (O(concurrency) per call); through aiohttp a call cost ~0.7 ms, flat in the
        # concurrency. The client's own timeout is a backstop; asyncio.wait_for enforces the deadline.
        self.client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0,
                                         timeout=timeout_s + 5.0, http_client=openai.DefaultAioHttpClient())
        # What another process needs to make the same calls (labeling.revision_processes): no cache, no ledger.
        self.settings = OpenAISettings(model=model, api_key=api_key, base_url=base_url, timeout_s=timeout_s,
                                       retry=self.retry, temperature=temperature, max_tokens=max_tokens)

    async def find_budget(self, context_length: int | None = None, tokenizer: str | None = None) -> None:
        """Learn the context length (the option, else `/v1/models`) and how to count prompts; see
        `tlcr.labeling.reviser_context`."""
        self.budget = await prompt_budget(self.client, self.model, max_tokens=self.max_tokens,
                                          context_length=context_length, tokenizer=tokenizer)

    def key(self, pair: PreferencePair) -> str:
        return cache_key(self.model, self.instruction_version, pair.prompt, pair.chosen, pair.rejected)

    async def revise(self, pair: PreferencePair) -> Revision:
        key = self.key(pair)
        answer = self.cache.get(key) if self.cache is not None else None
        usage = self.ledger.model(self.model)
        if answer is not None:
            usage.cache_hits += 1
        else:
            result = await self.fetch_answer(pair)
            if isinstance(result, Revision):  # a per-pair API failure (e.g. 400: context too long)
                return result
            answer = result
            if self.cache is not None:
                self.cache.put(key, answer)
        return revision_from_answer(answer, pair)

    async def fetch_answer(self, pair: PreferencePair) -> CachedAnswer | Revision:
        """One paid answer for `pair`, with retries; a Revision for a per-pair API failure. Raises
        ReviserError (stop the run) or TransientReviserError (retries exhausted)."""
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
            last_message: str | None = None  # the endpoint's error message, if it sent one
            try:
                # The client's generic POST: the same auth, errors and retries as `chat.completions.create`,
                # without its recursive transform of the request and pydantic `construct` of the answer
                # (together ~0.3 ms of CPU per call); `answer_from_completion` reads the four fields used.
                data = await asyncio.wait_for(
                    self.client.post("/chat/completions", cast_to=object, body=body), timeout=self.timeout_s)
            except (asyncio.TimeoutError, openai.APITimeoutError):
                last_error = "timeout"
            except openai.APIConnectionError as exc:
                last_error = f"connection ({exc.__class__.__name__})"
            except openai.APIStatusError as exc:
                status = exc.status_code
                message = endpoint_message(exc)
                if status in FATAL_STATUS:
                    self.ledger.error(self.model, f"http_{status}", message)
                    raise ReviserError(f"{self.name}: HTTP {status} from the endpoint ({message}); "
                                       "check the API key, base URL and model name") from exc
                if status not in RETRIABLE_STATUS and status < 500:
                    self.ledger.error(self.model, f"http_{status}", message)
                    return Revision(None, f"api_error_{status}", detail=message)
                last_error, last_message = f"http_{status}", message
                retry_after = retry_after_seconds(exc.response.headers.get("retry-after"))
            except (openai.APIResponseValidationError, ValueError):
                # a 200 whose body is not JSON (proxy glitch, overloaded server): retry
                last_error = "malformed_response"
            else:
                answer = answer_from_completion(data, self.model)
                if answer is None:
                    last_error = "malformed_response"
                else:
                    usage.answers += 1
                    usage.prompt_tokens += answer.prompt_tokens
                    usage.completion_tokens += answer.completion_tokens
                    return answer
            self.ledger.error(self.model, last_error.split(" ")[0], last_message)
            if attempt < self.retry.max_retries:
                delay = self.retry.delay(attempt, retry_after)
                log_retry(log, f"reviser {self.name}, pair {pair.id}", last_error, attempt + 1,
                          self.retry.max_retries, delay)
                await asyncio.sleep(delay)
        said = f": {last_message}" if last_message else ""
        raise TransientReviserError(f"pair {pair.id}: gave up after {self.retry.max_retries + 1} attempts "
                                    f"(last error: {last_error}{said})")

    async def aclose(self) -> None:
        await self.client.close()


def endpoint_message(exc: openai.APIStatusError) -> str:
    """The error message in an endpoint's error body, whitespace collapsed and cut to REASON_DETAIL_MAX.

    OpenAI and vLLM send `{"error": {"message": ...}}` (older vLLM `{"message": ...}`), FastAPI servers
    `{"detail": ...}`; any other body is taken as text.
    """
    body = exc.body
    text: object = None
    if isinstance(body, dict):
        error = body.get("error")
        text = (error.get("message") if isinstance(error, dict) else error) or body.get("message") \
            or body.get("detail")
    elif isinstance(body, str):
        text = body
    if text is None or text == "":
        text = exc.message
    return cut_message(text if isinstance(text, str) else repr(text))

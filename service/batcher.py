"""Dynamic batching: requests' sequences wait in a bounded queue and are merged into forward batches.

A batch goes to the model when the queued sequences fill the token budget or the batch size, or when the
oldest one has waited long enough for companions: `max_wait_s`, or with adaptive waiting the smaller of
`max_wait_s` and a quarter of the recent forward time (waiting costs the device idle time, so it is only
worth it in proportion to how long a forward takes: a few ms on a GPU, tens of ms on a CPU), and no wait
at all once as many sequences are queued as went into the last batch or were recently queued or running at once.
With adaptive waiting the wait counts from the later of the oldest sequence's arrival and the model becoming
free: clients that each wait for their answer then gather into one batch (the sequences queued behind a
forward wait, at most that long, for those whose answers it just sent) instead of alternating between two
half batches, each of which uses the model less well.

Each batch is built around the oldest sequence (so none starves) from the queued sequences closest to it
in length (so padding stays small). With prefix sharing (`prompt_of` given), sequences that share a prompt
join a batch together, and the token budget counts the tokens a forward computes: a prompt that several
of the batch's sequences share counts once (see `computed_tokens`). With a packed forward (`packed=True`)
no padding is computed, so the budget counts real tokens only.

One forward runs at a time, in a worker thread, so the event loop keeps accepting and validating requests
meanwhile. A full queue raises `QueueFull` at once (the route answers 503 + Retry-After): a request is
never left hanging.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

logger = logging.getLogger(__name__)

Payload = TypeVar("Payload")
Result = TypeVar("Result")


class QueueFull(RuntimeError):
    """The queue cannot take a request's sequences now; the caller should retry later."""


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new work."""


WAIT_FRACTION = 0.25  # adaptive waiting: at most this fraction of the recent forward time
FORWARD_TIME_SMOOTHING = 0.2  # weight of the newest forward in the running average


def companion_wait(max_wait_s: float, recent_forward_s: float | None) -> float:
    """How long the oldest queued sequence may wait for companions (pure: unit-tested).

    `recent_forward_s` None means fixed waiting (always `max_wait_s`).
    """
    if recent_forward_s is None:
        return max_wait_s
    return min(max_wait_s, WAIT_FRACTION * recent_forward_s)


def should_dispatch(*, queued: int, queued_tokens: int, oldest_wait_s: float, wait_s: float,
                    last_batch_size: int, max_batch_size: int, token_budget: int, closing: bool,
                    in_system: int = 0, free_s: float = float("inf")) -> bool:
    """Whether to send a batch now rather than wait for more companions (pure: unit-tested).

    `in_system`: the most sequences queued or in the forward at once since the last dispatch; `free_s`: how long
    the model has been free (both from adaptive waiting; the defaults leave them out).
    """
    if closing or queued >= max_batch_size or queued_tokens >= token_budget:
        return True
    # As many sequences as the last batch, or as were recently in the system, are back: waiting longer is unlikely
    # to gather more (with clients that each wait for their answer, the whole wave has returned) and would idle
    # the model.
    if max(last_batch_size, in_system) and queued >= max(last_batch_size, in_system):
        return True
    # The wait for companions counts from the later of the oldest sequence's arrival and the model becoming free:
    # sequences that queued behind a forward then wait (a bounded time) for those whose answers it just sent, so
    # closed-loop clients gather into one batch instead of alternating between two half batches.
    return min(oldest_wait_s, free_s) >= wait_s


class BatchObserver(Protocol):
    def batch_done(self, size: int, tokens: int, padded_tokens: int, seconds: float) -> None: ...
    def queue_depth(self, depth: int) -> None: ...
    def sequences_dropped(self, count: int) -> None: ...


def select_batch(lengths: Sequence[int], anchor: int, token_budget: int, max_batch_size: int) -> list[int]:
    """Indices of one batch: `anchor` plus the queued sequences nearest to it in length.

    The padded cost of a batch is (longest length) × (count); it stays within `token_budget` unless the
    anchor alone exceeds it (then the anchor runs alone). Pure: unit-tested.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    pos = order.index(anchor)
    lo = hi = pos
    anchor_len = lengths[anchor]

    def fits(new_lo: int, new_hi: int) -> bool:
        count = new_hi - new_lo + 1
        return count <= max_batch_size and lengths[order[new_hi]] * count <= token_budget

    while True:
        options = []
        if lo > 0:
            options.append((anchor_len - lengths[order[lo - 1]], lo - 1, hi))
        if hi < len(order) - 1:
            options.append((lengths[order[hi + 1]] - anchor_len, lo, hi + 1))
        grown = False
        for _, new_lo, new_hi in sorted(options):
            if fits(new_lo, new_hi):
                lo, hi, grown = new_lo, new_hi, True
                break
        if not grown:
            return sorted(order[lo: hi + 1])


@dataclass(frozen=True)
class Shape:
    """What batch selection knows of a queued sequence: its length and, with sharing, its prompt."""

    length: int
    prompt_key: Hashable | None = None  # equal keys: token-for-token equal prompts; None: never shared
    prompt_length: int = 0


def computed_tokens(shapes: Sequence[Shape], packed: bool = False) -> int:
    """Tokens one forward of these sequences computes, padding included (pure: unit-tested).

    A prompt that two or more of them share is forwarded once (the distinct prompts padded to the longest)
    and their responses after it (padded to the longest response); every other sequence is forwarded
    whole, padded to the longest of them. This is how `TokenScorer.probabilities` runs a padded batch;
    `packed`: as it runs a packed one, the same without padding.
    """
    counts: dict[Hashable, int] = {}
    for s in shapes:
        if s.prompt_key is not None:
            counts[s.prompt_key] = counts.get(s.prompt_key, 0) + 1
    if packed:
        distinct = {s.prompt_key: s.prompt_length for s in shapes if s.prompt_key is not None
                    and counts[s.prompt_key] > 1}
        return sum(s.length - (s.prompt_length if s.prompt_key in distinct else 0) for s in shapes) \
            + sum(distinct.values())
    prompts: dict[Hashable, int] = {}
    longest_response = shared_rows = longest_single = singles = 0
    for s in shapes:
        if s.prompt_key is not None and counts[s.prompt_key] > 1:
            prompts[s.prompt_key] = s.prompt_length
            longest_response = max(longest_response, s.length - s.prompt_length)
            shared_rows += 1
        else:
            longest_single = max(longest_single, s.length)
            singles += 1
    return max(prompts.values(), default=0) * len(prompts) + longest_response * shared_rows \
        + longest_single * singles


# With sharing, batch selection looks at this many candidate groups nearest in length at most (it runs on
# the event loop; the nearest ones are those that would be taken anyway).
SHARED_SELECTION_CANDIDATES = 256


def select_shared_batch(shapes: Sequence[Shape], anchor: int, token_budget: int, max_batch_size: int,
                        packed: bool = False) -> list[int]:
    """Indices of one batch with prefix sharing: `anchor`'s prompt group, then whole groups (or as much of
    a group as fits) nearest in length, within `token_budget` computed tokens (pure: unit-tested).

    The anchor always runs, alone if even it exceeds the budget. Within a group, older sequences go first.
    """
    groups: dict[Hashable, list[int]] = {}
    for i, s in enumerate(shapes):
        groups.setdefault(("prompt", s.prompt_key) if s.prompt_key is not None else ("alone", i), []).append(i)
    anchor_key = ("prompt", shapes[anchor].prompt_key) if shapes[anchor].prompt_key is not None \
        else ("alone", anchor)
    anchor_len = shapes[anchor].length
    others = sorted((key for key in groups if key != anchor_key),
                    key=lambda k: (abs(sum(shapes[i].length for i in groups[k]) / len(groups[k]) - anchor_len),
                                   groups[k][0]))
    chosen = [anchor]
    for key in [anchor_key, *others[:SHARED_SELECTION_CANDIDATES]]:
        for i in groups[key]:
            if len(chosen) >= max_batch_size:
                return sorted(chosen)
            if i == anchor:
                continue
            if computed_tokens([shapes[j] for j in [*chosen, i]], packed) > token_budget:
                break  # the rest of this group is no cheaper; try the next group
            chosen.append(i)
    return sorted(chosen)


@dataclass
class _Entry(Generic[Payload, Result]):
    payload: Payload
    shape: Shape
    future: asyncio.Future[Result]
    enqueued_at: float = field(default_factory=time.monotonic)

    @property
    def length(self) -> int:
        return self.shape.length


class DynamicBatcher(Generic[Payload, Result]):
    """Merges concurrently submitted payloads into calls of `forward(list[payload]) -> list[result]`."""

    def __init__(self, forward: Callable[[list[Payload]], list[Result]], length: Callable[[Payload], int], *,
                 token_budget: int, max_batch_size: int, max_wait_s: float, max_queue: int,
                 adaptive_wait: bool = False, observer: BatchObserver | None = None,
                 name: str = "batcher",
                 prompt_of: Callable[[Payload], tuple[Hashable, int] | None] | None = None,
                 packed: bool = False) -> None:
        """`prompt_of(payload)`: (prompt key, prompt length) for prefix sharing, None for a payload whose
        prompt is never shared; without it, every sequence's whole padded length counts. `packed`: the
        forward computes no padding, so only real tokens count."""
        self._forward = forward
        self._length = length
        self._prompt_of = prompt_of
        self._packed = packed
        self.token_budget = token_budget
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        # Running average of forward seconds (adaptive waiting); None: always wait max_wait_s.
        self._recent_forward_s: float | None = 0.0 if adaptive_wait else None
        self._last_batch_size = 0  # adaptive waiting: dispatch at once when this many are queued
        self._running = 0  # sequences in the forward now
        self._in_system = 0  # adaptive waiting: the most sequences queued or running at once since the last dispatch
        self._free_since = float("-inf")  # when the model last became free (time.monotonic)
        self._observer = observer
        self._name = name
        self._pending: list[_Entry[Payload, Result]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None
        # One thread: forwards run one at a time, off the event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tlcr-{name}")

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def wait_s(self) -> float:
        """The current wait for companions."""
        return companion_wait(self.max_wait_s, self._recent_forward_s)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"tlcr-{self._name}")

    async def close(self) -> None:
        """Stop taking work, finish everything queued, stop the worker."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
        self._executor.shutdown(wait=True)

    async def submit(self, payloads: Sequence[Payload]) -> list[Result]:
        """Results in order; all of a request's payloads are queued, or none (QueueFull)."""
        if self._closing:
            raise BatcherClosed(f"{self._name} is shutting down")
        if self._worker is None:
            raise RuntimeError(f"{self._name} was not started")
        if len(self._pending) + len(payloads) > self.max_queue:
            raise QueueFull(f"{len(self._pending)} sequences are queued; {len(payloads)} more would exceed "
                            f"the queue limit of {self.max_queue}")
        loop = asyncio.get_running_loop()
        entries = [_Entry(p, self._shape(p), loop.create_future()) for p in payloads]
        self._pending.extend(entries)
        self._in_system = max(self._in_system, len(self._pending) + self._running)
        self._report_depth()
        self._wakeup.set()
        try:
            if len(entries) == 1:  # the common case (one sequence per request): no gathering future
                return [await entries[0].future]
            # return_exceptions: every future's outcome is retrieved, then the first error is raised.
            outcomes = await asyncio.gather(*(e.future for e in entries), return_exceptions=True)
        except asyncio.CancelledError:  # the caller gave up (timeout, client disconnected)
            for e in entries:
                e.future.cancel()
            self._drop_cancelled()
            raise
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return list(outcomes)  # type: ignore[arg-type]

    def _drop_cancelled(self) -> None:
        """Take the sequences of requests that gave up out of the queue, so they are never computed (those
        already in a running forward finish; their results are discarded)."""
        queued = len(self._pending)
        self._pending = [e for e in self._pending if not e.future.cancelled()]
        dropped = queued - len(self._pending)
        if dropped:
            self._report_depth()
            if self._observer is not None:
                self._observer.sequences_dropped(dropped)

    def _shape(self, payload: Payload) -> Shape:
        length = self._length(payload)
        prompt = self._prompt_of(payload) if self._prompt_of is not None else None
        return Shape(length) if prompt is None else Shape(length, prompt[0], prompt[1])

    def _cost(self, entries: Sequence[_Entry[Payload, Result]]) -> int:
        """Tokens a forward of `entries` computes (padded without sharing: the longest × the count)."""
        if self._prompt_of is None and not self._packed:
            return max((e.length for e in entries), default=0) * len(entries)
        return computed_tokens([e.shape for e in entries], self._packed)

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.queue_depth(len(self._pending))

    def _ready(self) -> bool:
        adaptive = self._recent_forward_s is not None
        now = time.monotonic()
        return should_dispatch(
            queued=len(self._pending),
            queued_tokens=(sum(e.length for e in self._pending) if self._prompt_of is None
                           else computed_tokens([e.shape for e in self._pending], self._packed)),
            oldest_wait_s=now - self._pending[0].enqueued_at, wait_s=self.wait_s,
            last_batch_size=self._last_batch_size, max_batch_size=self.max_batch_size,
            token_budget=self.token_budget, closing=self._closing,
            in_system=self._in_system if adaptive else 0,
            free_s=now - self._free_since if adaptive else float("inf"))

    def _wait_deadline(self) -> float:
        """When the oldest queued sequence stops waiting for companions (time.monotonic)."""
        start = self._pending[0].enqueued_at
        if self._recent_forward_s is not None:
            start = max(start, self._free_since)
        return start + self.wait_s

    def _take_batch(self) -> list[_Entry[Payload, Result]]:
        # A cancelled request's futures are cancelled at once, but its own clean-up runs only when its task
        # resumes, which may be after this.
        self._drop_cancelled()
        if not self._pending:
            return []
        if self._prompt_of is None and not self._packed:
            chosen = select_batch([e.length for e in self._pending], 0, self.token_budget, self.max_batch_size)
        else:
            chosen = select_shared_batch([e.shape for e in self._pending], 0, self.token_budget,
                                         self.max_batch_size, self._packed)
        chosen_set = set(chosen)
        batch = [self._pending[i] for i in chosen]
        self._pending = [e for i, e in enumerate(self._pending) if i not in chosen_set]
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if not self._ready():
                wait = self._wait_deadline() - time.monotonic()
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=max(wait, 0.0))
                except asyncio.TimeoutError:  # (TimeoutError itself only from Python 3.11)
                    pass
                continue
            batch = self._take_batch()
            self._report_depth()
            if not batch:
                continue
            started = time.perf_counter()
            self._running = len(batch)
            self._in_system = len(self._pending) + len(batch)
            try:
                results = await loop.run_in_executor(self._executor, self._forward, [e.payload for e in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"forward returned {len(results)} results for {len(batch)} inputs")
            except Exception as exc:  # the model failed: every caller in this batch gets the error
                logger.exception("%s: forward of %d sequences failed", self._name, len(batch))
                for e in batch:
                    if not e.future.done():
                        e.future.set_exception(exc)
                continue
            finally:
                self._running = 0
                self._free_since = time.monotonic()
            seconds = time.perf_counter() - started
            if self._recent_forward_s is not None:
                self._recent_forward_s += FORWARD_TIME_SMOOTHING * (seconds - self._recent_forward_s)
                self._last_batch_size = len(batch)
            for e, result in zip(batch, results, strict=True):
                if not e.future.done():
                    e.future.set_result(result)
            if self._observer is not None:
                self._observer.batch_done(len(batch), sum(e.length for e in batch), self._cost(batch), seconds)

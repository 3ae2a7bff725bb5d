"""Dynamic batching: batch selection, merging, queue bounds, failures; batch invariance of real forwards."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tlcr.service.batcher import (
    BatcherClosed,
    DynamicBatcher,
    QueueFull,
    companion_wait,
    select_batch,
    should_dispatch,
)
from tlcr.service.scorer import Encoded, TokenScorer

# --- select_batch (pure) ------------------------------------------------------------------------


def test_batch_grows_around_the_anchor_by_length_within_the_budget() -> None:
    # sorted: 10 (anchor), 11, 12, 50, 200; adding 50 would cost 50 × 4 = 200 > 48
    assert select_batch([10, 50, 12, 11, 200], anchor=0, token_budget=48, max_batch_size=8) == [0, 2, 3]


def test_anchor_longer_than_the_budget_runs_alone() -> None:
    assert select_batch([500, 10], anchor=0, token_budget=100, max_batch_size=8) == [0]


def test_batch_size_is_capped() -> None:
    chosen = select_batch([5] * 10, anchor=3, token_budget=1000, max_batch_size=4)
    assert len(chosen) == 4 and 3 in chosen


def test_nearest_lengths_join_first() -> None:
    # anchor 20: 19 joins before 30 or 10; then 10 and 30 tie, the shorter (cheaper) side wins
    assert select_batch([20, 10, 19, 30], anchor=0, token_budget=1000, max_batch_size=3) == [0, 1, 2]


def test_companion_wait_is_a_fraction_of_recent_forward_time_capped() -> None:
    assert companion_wait(0.05, None) == 0.05  # fixed waiting
    assert companion_wait(0.05, 0.0) == 0.0  # nothing measured yet: no reason to wait
    assert companion_wait(0.05, 0.1) == pytest.approx(0.025)  # a quarter of a 100 ms forward
    assert companion_wait(0.05, 1.0) == 0.05  # capped


def test_dispatch_rules() -> None:
    base = {"queued": 3, "queued_tokens": 300, "oldest_wait_s": 0.001, "wait_s": 0.02, "last_batch_size": 0,
            "max_batch_size": 8, "token_budget": 1000, "closing": False}
    assert not should_dispatch(**base)  # young queue: wait for companions
    assert should_dispatch(**{**base, "oldest_wait_s": 0.02})  # waited long enough
    assert should_dispatch(**{**base, "queued": 8})  # batch full
    assert should_dispatch(**{**base, "queued_tokens": 1000})  # token budget full
    assert should_dispatch(**{**base, "closing": True})  # shutting down: no waiting
    assert should_dispatch(**{**base, "last_batch_size": 3})  # the last batch's worth is back
    assert not should_dispatch(**{**base, "last_batch_size": 4})
    # as many as were recently queued or running at once are back
    assert should_dispatch(**{**base, "in_system": 3}) and not should_dispatch(**{**base, "in_system": 6})
    # the wait counts from the later of the oldest's arrival and the model becoming free
    old_queue = {**base, "oldest_wait_s": 0.5, "in_system": 6}
    assert should_dispatch(**old_queue)  # free for long (the default: never ran)
    assert not should_dispatch(**{**old_queue, "free_s": 0.001})  # just freed: wait for the answered to return
    assert should_dispatch(**{**old_queue, "free_s": 0.02})


# --- DynamicBatcher with a recording forward -------------------------------------------------------


class Recorder:
    """forward(list of ints) → their doubles; records each batch; can block, be slow or fail on demand."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False
        self.seconds = seconds

    def __call__(self, payloads: list[int]) -> list[int]:
        self.gate.wait(10)
        time.sleep(self.seconds)
        self.batches.append(list(payloads))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("injected forward failure")
        return [2 * p for p in payloads]


def make(recorder: Recorder, **kwargs: float) -> DynamicBatcher[int, int]:
    options = {"token_budget": 1000, "max_batch_size": 64, "max_wait_s": 0.05, "max_queue": 100, **kwargs}
    return DynamicBatcher(recorder, lambda p: p, **options)  # type: ignore[arg-type]


async def test_concurrent_requests_merge_into_one_forward() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_wait_s=0.2)
    batcher.start()
    results = await asyncio.gather(batcher.submit([1, 2]), batcher.submit([3]), batcher.submit([4, 5, 6]))
    await batcher.close()
    assert results == [[2, 4], [6], [8, 10, 12]]
    assert len(recorder.batches) == 1 and sorted(recorder.batches[0]) == [1, 2, 3, 4, 5, 6]


async def test_token_budget_splits_batches() -> None:
    recorder = Recorder()
    batcher = make(recorder, token_budget=100, max_wait_s=0.2)
    batcher.start()
    results = await batcher.submit([40, 40, 40, 40])
    await batcher.close()
    assert results == [80, 80, 80, 80]
    assert [len(b) for b in recorder.batches] == [2, 2]  # 40 × 2 = 80 ≤ 100 < 40 × 3


async def test_full_queue_refuses_at_once_and_recovers() -> None:
    recorder = Recorder()
    recorder.gate.clear()  # the model is busy: nothing leaves the queue
    batcher = make(recorder, max_queue=4, max_batch_size=2, max_wait_s=0.0)
    batcher.start()
    first = asyncio.ensure_future(batcher.submit([1, 2]))  # taken into the (blocked) forward
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(batcher.submit([3, 4, 5, 6]))  # fills the queue
    await asyncio.sleep(0.01)
    with pytest.raises(QueueFull, match="queue limit of 4"):
        await batcher.submit([7])
    recorder.gate.set()
    assert await first == [2, 4] and await queued == [6, 8, 10, 12]
    assert await batcher.submit([7]) == [14]
    await batcher.close()
    with pytest.raises(BatcherClosed):
        await batcher.submit([1])


async def test_forward_failure_reaches_its_callers_only() -> None:
    recorder = Recorder()
    recorder.fail_next = True
    batcher = make(recorder)
    batcher.start()
    with pytest.raises(RuntimeError, match="injected forward failure"):
        await batcher.submit([1, 2])
    assert await batcher.submit([3]) == [6]
    await batcher.close()


async def test_abandoned_requests_are_not_computed() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_wait_s=0.3)
    batcher.start()
    abandoned = asyncio.ensure_future(batcher.submit([111, 222]))
    await asyncio.sleep(0.01)
    abandoned.cancel()
    assert await batcher.submit([3]) == [6]
    await batcher.close()
    assert all(111 not in b for b in recorder.batches)


class DropCounter:
    """A batch observer that keeps what the batcher reports about its queue."""

    def __init__(self) -> None:
        self.depths: list[int] = []
        self.dropped = 0

    def batch_done(self, size: int, tokens: int, padded_tokens: int, seconds: float) -> None:
        pass

    def queue_depth(self, depth: int) -> None:
        self.depths.append(depth)

    def sequences_dropped(self, count: int) -> None:
        self.dropped += count


async def test_cancelled_request_leaves_the_queue_at_once_and_is_counted() -> None:
    recorder, observer = Recorder(), DropCounter()
    recorder.gate.clear()  # the first forward blocks, so later requests stay queued
    batcher = DynamicBatcher(recorder, lambda p: p, token_budget=1000, max_batch_size=64, max_wait_s=0.0,
                             max_queue=3, observer=observer)
    batcher.start()
    running = asyncio.ensure_future(batcher.submit([1]))
    while batcher.depth or not observer.depths:  # until the first request went into the forward
        await asyncio.sleep(0.005)
    abandoned = asyncio.ensure_future(batcher.submit([111, 222, 333]))  # fills the queue
    await asyncio.sleep(0.01)
    assert batcher.depth == 3
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    assert batcher.depth == 0 and observer.dropped == 3 and observer.depths[-1] == 0
    kept = asyncio.ensure_future(batcher.submit([4, 5, 6]))  # room again before any forward ran
    recorder.gate.set()
    assert await running == [2] and await kept == [8, 10, 12]
    await batcher.close()
    assert all(p not in b for b in recorder.batches for p in (111, 222, 333))


async def test_adaptive_wait_follows_forward_time() -> None:
    recorder = Recorder(seconds=0.2)
    batcher = make(recorder, max_wait_s=0.05, adaptive_wait=True)
    batcher.start()
    assert batcher.wait_s == 0.0  # no forward seen yet: a lone request goes at once
    assert await batcher.submit([1]) == [2]
    # running average 0.2 × (≥ 0.2 s) → wait a quarter of it, at most the 50 ms cap
    assert 0.25 * 0.2 * 0.2 <= batcher.wait_s <= 0.05
    await batcher.close()


async def test_closed_loop_clients_gather_into_full_batches() -> None:
    """16 clients that each send their next sequence once answered: after the first batches every forward holds
    all 16, not two alternating halves (the sequences queued behind a forward wait for those it answers)."""
    recorder = Recorder(seconds=0.03)
    batcher = make(recorder, max_wait_s=0.05, adaptive_wait=True)
    batcher.start()

    async def client(index: int) -> None:
        await asyncio.sleep(0.003 * index)  # they start while the first forwards run
        for _ in range(10):
            assert await batcher.submit([index]) == [2 * index]
            await asyncio.sleep(0.0005 * (index % 4))  # clients come back at slightly different times

    await asyncio.gather(*(client(i) for i in range(16)))
    await batcher.close()
    sizes = [len(batch) for batch in recorder.batches]
    # the first batches come as the clients start, the last as they finish; between them, only full ones
    assert sizes.count(16) >= 6 and set(sizes[sizes.index(16):sizes.index(16) + 6]) == {16}, sizes


async def test_close_finishes_queued_work() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_wait_s=5.0)  # would wait long for companions
    batcher.start()
    pending = asyncio.ensure_future(batcher.submit([1, 2, 3]))
    await asyncio.sleep(0.01)
    await batcher.close()  # closing dispatches at once
    assert await pending == [2, 4, 6]


# --- batch invariance of the real forward -----------------------------------------------------------


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_probabilities_do_not_depend_on_batch_companions(which: str, tiny_token_classifier_dir: Path,
                                                         tiny_gpt2_discriminator_dir: Path) -> None:
    path = tiny_token_classifier_dir if which == "llama" else tiny_gpt2_discriminator_dir
    scorer = TokenScorer.load(str(path), device="cpu", dtype="float32")
    rng = np.random.default_rng(0)
    items = [Encoded(rng.integers(2, scorer.vocab_size, n).tolist(), rng.integers(2, scorer.vocab_size, m).tolist())
             for n, m in [(5, 3), (40, 17), (1, 1), (0, 9), (90, 60), (12, 2)]]
    alone = [scorer.probabilities([item])[0] for item in items]
    together = scorer.probabilities(items)
    reversed_batch = scorer.probabilities(items[::-1])[::-1]
    for a, b, c, item in zip(alone, together, reversed_batch, items, strict=True):
        assert a.shape == (len(item.response_ids),)
        assert np.abs(a - b).max() <= 1e-5 and np.abs(a - c).max() <= 1e-5

"""Reviser calls and labelling spread over worker processes (`tlcr label --workers N`).

Why: one event loop spends ~1.1-1.3 ms of CPU per pair at a few hundred calls in flight (~0.7 ms of it in
the openai SDK's request path, the rest tokenizing, labelling and writing), so one process tops out below
~900 pairs/s however many calls are in flight; more processes use more cores.

The main process keeps what must have one owner: which pairs are left (resume), the answer cache, the output
file (appended to, reordered at the end) and the usage ledger. Each worker process has its own event loop
and `openai.AsyncOpenAI` client; for each pair it is sent (with the cached answer, if any) it calls the
endpoint, parses the answer, tokenizes, labels and filters, and sends back the record as its JSON line plus
the answer it paid for. The main process commits that answer to the cache before it writes the line, as in
one process, so a `kill -9` of any process loses at most the calls in flight. Workers exit when their input
closes (the main process ended, even by SIGKILL).

Frames are a 4-byte length and a pickle, over each worker's stdin and stdout (both ends are this module,
started by this process).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import pickle
import struct
import sys
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from core.data.pairs import PreferencePair
from labeling.cache import CachedAnswer
from labeling.filters import FilterConfig
from labeling.revisers import (
    OpenAIReviser,
    OpenAISettings,
    ReviserError,
    Revision,
    TransientReviserError,
    revision_from_answer,
)
from labeling.usage import COUNTS, ModelUsage

log = logging.getLogger(__name__)

# One event loop kept c = 64 calls at 0.93-0.98 of concurrency / latency against a 200 ms endpoint in
# benchmarks/labeling.py, and c = 256 at 0.55-0.59 (CPU-bound): the default gives each process <= 64.
CALLS_PER_WORKER = 64

# What a worker answers for one pair.
RECORD, UNFINISHED, REFUSED, CRASHED = "record", "unfinished", "refused", "crashed"
_HEADER = struct.Struct("<I")
# The worker imports this very package from wherever it was imported here (a checkout, a wheel): it gets this
# process's module search path, as multiprocessing's "spawn" does.
_WORKER_CODE = "import sys; sys.path[:] = {path!r}; from labeling.revision_processes import worker_main; worker_main()"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may run on (a container's share)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(concurrency: int) -> int:
    """One process per CALLS_PER_WORKER calls in flight, at most one per available CPU."""
    return max(1, min(available_cpus(), math.ceil(concurrency / CALLS_PER_WORKER)))


@dataclass(frozen=True)
class WorkerSetup:
    """Everything a worker needs, sent as its first frame."""

    settings: OpenAISettings
    concurrency: int  # calls this worker may have in flight
    tokenizer: PreTrainedTokenizerBase
    reviser_name: str
    instruction_version: str
    tokenizer_name: str
    filters: FilterConfig
    log_level: int


# ----------------------------------------------------------------------------- frames
def _frame(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Messages from a stream, split from whatever has arrived: one read per batch, not two per message."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._messages: deque[Any] = deque()

    async def read(self) -> Any:
        """The next message, or None at the end of the stream."""
        while not self._messages:
            chunk = await self._stream.read(1 << 20)
            if not chunk:
                if self._buffer:
                    raise EOFError(f"the stream ended inside a message ({len(self._buffer)} bytes)")
                return None
            self._buffer += chunk
            start = 0
            with memoryview(self._buffer) as view:
                while len(view) - start >= _HEADER.size:
                    end = start + _HEADER.size + _HEADER.unpack_from(view, start)[0]
                    if end > len(view):
                        break
                    self._messages.append(pickle.loads(view[start + _HEADER.size:end]))
                    start = end
            del self._buffer[:start]
        return self._messages.popleft()


class FrameWriter:
    """Sends messages; those sent in one event-loop step go out in one write (one system call)."""

    def __init__(self, stream: asyncio.StreamWriter) -> None:
        self._stream = stream
        self._pending: list[bytes] = []

    def send(self, message: object) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(_frame(message))

    def _flush(self) -> None:
        if not self._stream.is_closing():
            self._stream.write(b"".join(self._pending))
        self._pending.clear()


# ----------------------------------------------------------------------------- the worker process
def worker_main() -> None:
    """Entry point of a worker process: frames in on stdin, out on stdout."""
    from labeling.worker import run_event_loop

    out_fd = os.dup(1)
    os.dup2(2, 1)  # anything a library prints goes to stderr: stdout carries only frames
    run_event_loop(_serve(0, out_fd))


async def _pipe_streams(in_fd: int, out_fd: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(in_fd, "rb", 0))
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", 0))
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def _serve(in_fd: int, out_fd: int) -> None:
    from core.logs import setup_logging, verbosity_of_level
    from labeling.worker import make_record

    stdin, stdout = await _pipe_streams(in_fd, out_fd)
    reader, writer = FrameReader(stdin), FrameWriter(stdout)
    setup: WorkerSetup | None = await reader.read()
    if setup is None:
        return
    setup_logging(verbosity_of_level(logging.getLevelName(setup.log_level)))
    reviser = setup.settings.reviser(setup.concurrency)
    usage = reviser.ledger.model(reviser.model)
    names = {"reviser": setup.reviser_name, "instruction_version": setup.instruction_version,
             "tokenizer_name": setup.tokenizer_name}

    async def label(seq: int, pair: PreferencePair, cached: CachedAnswer | None) -> None:
        paid: CachedAnswer | None = None
        try:
            if cached is not None:
                revision = revision_from_answer(cached, pair)
            else:
                fetched = await reviser.fetch_answer(pair)
                if isinstance(fetched, Revision):  # a per-pair API failure: a failed record
                    revision = fetched
                else:
                    paid, revision = fetched, revision_from_answer(fetched, pair)
            record = make_record(pair, revision, setup.tokenizer, filters=setup.filters, **names)
            reply = (seq, RECORD, json.dumps(record, ensure_ascii=False), paid, usage)
        except TransientReviserError as exc:
            reply = (seq, UNFINISHED, str(exc), None, usage)
        except ReviserError as exc:
            reply = (seq, REFUSED, str(exc), None, usage)
        except Exception:  # any other failure is reported to the main process, which stops the run
            reply = (seq, CRASHED, traceback.format_exc(), paid, usage)
        writer.send(reply)

    writer.send(("ready",))
    tasks: set[asyncio.Task[None]] = set()
    try:
        while (message := await reader.read()) is not None:
            task = asyncio.create_task(label(*message))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:  # input closed: the main process is done (or gone), nobody waits for calls still in flight
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await reviser.aclose()
        stdout.close()


# ----------------------------------------------------------------------------- the main process's side
@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    pending: dict[int, asyncio.Future[tuple[str, str, CachedAnswer | None]]] = field(default_factory=dict)
    usage: ModelUsage = field(default_factory=ModelUsage)  # the worker's latest totals
    merged: ModelUsage = field(default_factory=ModelUsage)  # the totals already added to the ledger
    failure: RuntimeError | None = None
    reader: asyncio.Task[None] | None = None
    replies: FrameReader = field(init=False)
    requests: FrameWriter = field(init=False)

    def __post_init__(self) -> None:
        assert self.process.stdout is not None and self.process.stdin is not None
        self.replies, self.requests = FrameReader(self.process.stdout), FrameWriter(self.process.stdin)


class RevisionProcesses:
    """`count` worker processes making the calls of `reviser` (an OpenAIReviser whose cache and ledger stay
    here) and labelling the answers; `label(pair, lane)` returns a pair's record as a JSON line."""

    def __init__(self, reviser: OpenAIReviser, count: int, concurrency: int, *, tokenizer: PreTrainedTokenizerBase,
                 tokenizer_name: str, filters: FilterConfig) -> None:
        if not 2 <= count <= concurrency:
            raise ValueError(f"worker processes must be between 2 and the concurrency ({concurrency}), got {count}")
        self.reviser = reviser
        self.count = count
        self.setup = WorkerSetup(
            settings=reviser.settings, concurrency=math.ceil(concurrency / count), tokenizer=tokenizer,
            reviser_name=reviser.name, instruction_version=reviser.instruction_version,
            tokenizer_name=tokenizer_name, filters=filters,
            log_level=logging.getLogger("labeling").getEffectiveLevel())
        self.workers: list[_Worker] = []
        self.ready = False  # every worker has started
        self._seq = itertools.count()

    async def start(self) -> None:
        code, setup_frame = _WORKER_CODE.format(path=sys.path), _frame(self.setup)
        for index in range(self.count):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            self.workers.append(_Worker(index, process))
            assert process.stdin is not None
            process.stdin.write(setup_frame)
        for worker in self.workers:
            if await worker.replies.read() != ("ready",):
                code = await worker.process.wait()
                raise RuntimeError(f"labelling worker process {worker.index} (pid {worker.process.pid}) exited "
                                   f"with code {code} while starting (its error, if any, is above)")
            worker.reader = asyncio.create_task(self._read_replies(worker))
        self.ready = True

    async def _read_replies(self, worker: _Worker) -> None:
        with contextlib.suppress(EOFError):  # the worker died in the middle of a reply
            while (reply := await worker.replies.read()) is not None:
                seq, kind, text, paid, worker.usage = reply
                future = worker.pending.pop(seq)
                if not future.done():
                    future.set_result((kind, text, paid))
        code = await worker.process.wait()
        worker.failure = RuntimeError(f"labelling worker process {worker.index} (pid {worker.process.pid}) exited "
                                      f"with code {code} (its error, if any, is above)")
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(worker.failure)
        worker.pending.clear()

    async def label(self, pair: PreferencePair, lane: int) -> str:
        """The record of `pair` as a JSON line, made by worker `lane % count`. Raises TransientReviserError
        (retries exhausted), ReviserError (the endpoint refused the key, URL or model) or RuntimeError."""
        worker = self.workers[lane % self.count]
        if worker.failure is not None:
            raise worker.failure
        reviser, cache = self.reviser, self.reviser.cache
        key = reviser.key(pair)
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            reviser.ledger.model(reviser.model).cache_hits += 1
        seq = next(self._seq)
        future: asyncio.Future[tuple[str, str, CachedAnswer | None]] = asyncio.get_running_loop().create_future()
        worker.pending[seq] = future
        worker.requests.send((seq, pair, cached))
        kind, text, paid = await future
        if paid is not None and cache is not None:
            cache.put(key, paid)  # before the record is written, as in one process
        if kind == RECORD:
            return text
        if kind == UNFINISHED:
            raise TransientReviserError(text)
        if kind == REFUSED:
            raise ReviserError(text)
        raise RuntimeError(f"labelling worker process {worker.index} failed on pair {pair.id}:\n{text}")

    def merge_usage(self) -> None:
        """Add what the workers counted since the last merge to the reviser's ledger (which counts the calls
        and cache hits of this process too)."""
        ledger = self.reviser.ledger.model(self.reviser.model)
        for worker in self.workers:
            new, old = worker.usage, worker.merged
            for name in COUNTS:
                setattr(ledger, name, getattr(ledger, name) + getattr(new, name) - getattr(old, name))
            ledger.errors = dict(Counter(ledger.errors) + (Counter(new.errors) - Counter(old.errors)))
            worker.merged = new

    async def aclose(self) -> None:
        """Close every worker's input (it exits), wait for it (10 s, then kill it)."""
        for worker in self.workers:
            if worker.process.stdin is not None and not worker.process.stdin.is_closing():
                worker.process.stdin.close()
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.process.wait(), timeout=10)
            except asyncio.TimeoutError:
                log.warning("labelling worker process %d did not exit: killing it", worker.index)
                worker.process.kill()
                await worker.process.wait()
            if worker.reader is not None:
                await asyncio.gather(worker.reader, return_exceptions=True)
        self.merge_usage()

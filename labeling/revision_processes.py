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

Frames are a 4-byte length and a pickle, over a pipe each way (both ends are this module).

How workers start (`start_method`):
- "fork" (the default on Linux): a copy of this process, with openai, transformers and the tokenizer already
  loaded: two were ready in ~50 ms (0.1 s of CPU), two spawned ones in 1.1 s (2.6 s of CPU). The copy never
  touches what it inherited from this process (its event loop, cache connection, output file): it freezes
  those objects out of garbage collection, resets the signal wake-up pipe and the running-loop marker, runs
  its own event loop and ends with `os._exit`.
- "spawn" (elsewhere): a fresh interpreter, sent its setup (tokenizer included) as its first frame; it spends
  ~1.1-1.4 s of CPU importing openai and transformers before its first call.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import logging
import math
import os
import pickle
import signal
import struct
import sys
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers import PreTrainedTokenizerBase

from tlcr.core.data.pairs import PreferencePair
from tlcr.labeling.cache import CachedAnswer
from tlcr.labeling.filters import FilterConfig
from tlcr.labeling.revisers import (
    OpenAIReviser,
    OpenAISettings,
    ReviserError,
    Revision,
    TransientReviserError,
    revision_from_answer,
)
from tlcr.labeling.usage import COUNTS, ModelUsage

log = logging.getLogger(__name__)

# One event loop kept c = 64 calls at 0.93-0.98 of concurrency / latency against a 200 ms endpoint in
# benchmarks/labeling.py, and c = 256 at 0.55-0.59 (CPU-bound): the default gives each process <= 64.
CALLS_PER_WORKER = 64

# What a worker answers for one pair.
RECORD, UNFINISHED, REFUSED, CRASHED = "record", "unfinished", "refused", "crashed"
_HEADER = struct.Struct("<I")
# The worker imports this very package from wherever it was imported here (a checkout, a wheel): it gets this
# process's module search path, as multiprocessing's "spawn" does.
_WORKER_CODE = ("import sys; sys.path[:] = {path!r}; "
                "from tlcr.labeling.revision_processes import worker_main; worker_main()")


StartMethod = Literal["fork", "spawn"]
START_METHODS: tuple[StartMethod, ...] = ("fork", "spawn")


def default_start_method() -> StartMethod:
    """fork where a forked worker can be waited for through a pidfd (Linux), spawn elsewhere (macOS: forking a
    process that has loaded system frameworks is unsafe)."""
    return "fork" if sys.platform == "linux" and hasattr(os, "pidfd_open") else "spawn"


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
    """Entry point of a spawned worker process: frames in on stdin, out on stdout."""
    from tlcr.labeling.worker import run_event_loop

    out_fd = os.dup(1)
    os.dup2(2, 1)  # anything a library prints goes to stderr: stdout carries only frames
    run_event_loop(_serve(0, out_fd, None))


def _forked_worker_main(setup: WorkerSetup, in_fd: int, out_fd: int, inherited_fds: list[int]) -> None:
    """What a forked worker runs; it never returns (os._exit), so nothing of the parent's is unwound here."""
    code = 1
    try:
        # The parent's objects stay alive and are never collected here: their finalizers would act on the
        # parent's sqlite connection, sockets and files.
        gc.freeze()
        for fd in inherited_fds:  # the parent's ends of earlier workers' pipes: their input ends when the parent's does
            os.close(fd)
        signal.set_wakeup_fd(-1)  # the parent's event-loop wake-up pipe
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the main process closes the input, which ends this
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        asyncio.events._set_running_loop(None)  # the parent's loop was running in this thread (Python < 3.12)
        _name_process(b"tlcr-label-wkr")
        from tlcr.labeling.worker import run_event_loop

        run_event_loop(_serve(in_fd, out_fd, setup))
        code = 0
    except BaseException:  # reported on stderr; the main process sees the pipe close and stops the run
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def _name_process(name: bytes) -> None:
    """Name this process for ps/top (Linux prctl PR_SET_NAME, 15 bytes at most); elsewhere nothing."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(15, name, 0, 0, 0)


async def _pipe_streams(in_fd: int, out_fd: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(in_fd, "rb", 0))
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", 0))
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def _serve(in_fd: int, out_fd: int, setup: WorkerSetup | None) -> None:
    """Label the pairs sent on `in_fd`; `setup` None: it is the first frame (a spawned worker)."""
    from tlcr.labeling.worker import make_record

    stdin, stdout = await _pipe_streams(in_fd, out_fd)
    reader, writer = FrameReader(stdin), FrameWriter(stdout)
    if setup is None:
        from tlcr.core.logs import setup_logging, verbosity_of_level

        setup = await reader.read()
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
class ForkedProcess:
    """A forked worker, with what RevisionProcesses uses of asyncio.subprocess.Process."""

    def __init__(self, pid: int, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader) -> None:
        self.pid, self.stdin, self.stdout = pid, stdin, stdout
        self.returncode: int | None = None
        self._exited: asyncio.Task[int] | None = None

    async def wait(self) -> int:
        if self._exited is None:  # one waitpid, however many wait
            self._exited = asyncio.ensure_future(self._wait())
        return await asyncio.shield(self._exited)

    async def _wait(self) -> int:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(self.pid)  # readable once the process has exited
        exited = loop.create_future()
        loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | ForkedProcess
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
                 tokenizer_name: str, filters: FilterConfig, start_method: StartMethod | None = None) -> None:
        if not 2 <= count <= concurrency:
            raise ValueError(f"worker processes must be between 2 and the concurrency ({concurrency}), got {count}")
        self.start_method = start_method or default_start_method()
        if self.start_method not in START_METHODS:
            raise ValueError(f"worker start method must be one of {START_METHODS}, got {self.start_method!r}")
        if self.start_method == "fork" and not hasattr(os, "pidfd_open"):
            raise ValueError("worker start method 'fork' needs Linux (os.pidfd_open); use 'spawn'")
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
        if self.start_method == "fork":
            await self._fork()
        else:
            await self._spawn()
        for worker in self.workers:
            if await worker.replies.read() != ("ready",):
                code = await worker.process.wait()
                raise RuntimeError(f"labelling worker process {worker.index} (pid {worker.process.pid}) exited "
                                   f"with code {code} while starting (its error, if any, is above)")
            worker.reader = asyncio.create_task(self._read_replies(worker))
        self.ready = True

    async def _spawn(self) -> None:
        code, setup_frame = _WORKER_CODE.format(path=sys.path), _frame(self.setup)
        for index in range(self.count):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            self.workers.append(_Worker(index, process))
            assert process.stdin is not None
            process.stdin.write(setup_frame)

    async def _fork(self) -> None:
        ours: list[int] = []  # this process's pipe ends so far, closed in each later worker
        for index in range(self.count):
            requests_in, requests_out = os.pipe()
            replies_in, replies_out = os.pipe()
            sys.stdout.flush()  # what is buffered would be written twice, once by each process
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _forked_worker_main(self.setup, requests_in, replies_out, [*ours, requests_out, replies_in])
            os.close(requests_in)
            os.close(replies_out)
            ours += [requests_out, replies_in]
            stdout, stdin = await _pipe_streams(replies_in, requests_out)
            self.workers.append(_Worker(index, ForkedProcess(pid, stdin, stdout)))

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
            ledger.error_messages = dict(Counter(ledger.error_messages)
                                         + (Counter(new.error_messages) - Counter(old.error_messages)))
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

"""The labelling pipeline: revise each pair, label its tokens, filter, append the record to the output.

Safety and scale:

- bounded concurrency: `concurrency` coroutines pull pairs from one iterator;
- append-only output, one record per line, written and flushed as soon as it is made (fsync'd in the
  background), so a `kill -9` loses at most the calls in flight and the answers waiting to be labelled
  (their paid answers are in the cache);
- resume: ids already in the output are skipped; a partial last line (a write cut by the kill) is
  detected and cut off; the output must come from the same reviser, instruction and tokenizer;
- when every pair of the run is labelled, the file is rewritten (atomically) in input order, so a
  resumed run ends with a file byte-identical to an uninterrupted run's;
- one worker per output file (an advisory lock), `shard i/n` to split a job across workers;
- `workers` > 1: the openai reviser's calls and the labelling run in that many processes
  (labeling.revision_processes); this process still owns the input, the cache, the output and the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from tlcr.core.data.jsonl import DataError
from tlcr.core.data.labelled import LabelledRecord
from tlcr.core.data.pairs import PreferencePair
from tlcr.labeling.filters import TOO_LONG, FilterConfig, LabelSummary, apply_filters, too_long_texts
from tlcr.labeling.instruction import EMPTY_REVISION
from tlcr.labeling.records import build_labelled_record
from tlcr.labeling.reviser_context import TOO_LONG_FOR_REVISER
from tlcr.labeling.revisers import OpenAIReviser, Reviser, Revision, TransientReviserError
from tlcr.labeling.revision_processes import RevisionProcesses, StartMethod
from tlcr.labeling.usage import LedgerFile

log = logging.getLogger(__name__)
T = TypeVar("T")


# ----------------------------------------------------------------------------- shards and input
def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' → (i, n) with 0 <= i < n."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError as exc:
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from exc
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {text!r}: need n >= 1 and 0 <= i < n")
    return index, count


def shard_of(pair_id: str, count: int) -> int:
    """Stable shard of an id (sha256, not Python's salted hash): the same on every machine and run."""
    return int(hashlib.sha256(pair_id.encode("utf-8")).hexdigest()[:12], 16) % count


def select_shard(pairs: Sequence[PreferencePair], index: int, count: int) -> list[PreferencePair]:
    return [p for p in pairs if shard_of(p.id, count) == index]


def dedupe_pairs(pairs: Sequence[PreferencePair]) -> tuple[list[PreferencePair], int]:
    """Drop exact repeats of a pair (same id and texts), counted; a reused id with other texts is an error."""
    seen: dict[str, PreferencePair] = {}
    unique: list[PreferencePair] = []
    for pair in pairs:
        first = seen.get(pair.id)
        if first is None:
            seen[pair.id] = pair
            unique.append(pair)
        elif (first.prompt, first.chosen, first.rejected) != (pair.prompt, pair.chosen, pair.rejected):
            raise DataError(f"pair id {pair.id!r} is used by two different pairs in the input")
    return unique, len(pairs) - len(unique)


# ----------------------------------------------------------------------------- records
def failed_record(pair: PreferencePair, reason: str, detail: str | None = None, *, reviser: str,
                  instruction_version: str, tokenizer_name: str) -> dict[str, Any]:
    """A status-"failed" record: no revision, so empty token fields and zero counts."""
    return LabelledRecord(
        id=pair.id, prompt=pair.prompt, chosen=pair.chosen, rejected=pair.rejected, revision=None,
        tokenizer=tokenizer_name, rejected_token_ids=[], rejected_labels=[], revised_token_ids=[], revised_labels=[],
        status="failed", reason=reason, reason_detail=detail, reviser=reviser,
        instruction_version=instruction_version, meta=dict(pair.meta)).to_dict()


def too_long_record(pair: PreferencePair, why: str, revision: str | None = None, *, reviser: str,
                    instruction_version: str, tokenizer_name: str) -> dict[str, Any]:
    """A status-"filtered", reason "too_long" record: not tokenized, so no token ids or labels."""
    record = failed_record(pair, TOO_LONG, reviser=reviser, instruction_version=instruction_version,
                           tokenizer_name=tokenizer_name)
    record["status"], record["revision"] = "filtered", revision
    record["meta"]["too_long"] = why
    return record


def make_record(pair: PreferencePair, revision: Revision, tokenizer: PreTrainedTokenizerBase, *, reviser: str,
                instruction_version: str, tokenizer_name: str, filters: FilterConfig) -> dict[str, Any]:
    # An empty revision deletes the whole response: every rejected token is negative (a minimal edit).
    text = "" if revision.revision is None and revision.failure == EMPTY_REVISION else revision.revision
    names = {"reviser": reviser, "instruction_version": instruction_version, "tokenizer_name": tokenizer_name}
    if text is None:
        record = failed_record(pair, revision.failure or "unknown", revision.detail, **names)
    elif (why := too_long_texts({"revision": text}, filters.max_chars)) is not None:
        record = too_long_record(pair, why, text, **names)  # checked before tokenizing it
    else:
        record = apply_filters(build_labelled_record(pair, text, tokenizer, **names), filters)
    if revision.reasons:
        record["meta"]["reviser_reasons"] = revision.reasons
    return record


# ----------------------------------------------------------------------------- existing output
@dataclass
class ExistingOutput:
    ids: set[str] = field(default_factory=set)
    records: int = 0
    cut_partial_line: bool = False


def cut_partial_last_line(f: IO[bytes]) -> int:
    """Truncate a file opened rb+ after its last newline; returns how many bytes were cut."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return 0
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return 0
    keep, pos = 0, size
    while pos > 0:  # search backwards in chunks: the file may be large
        step = min(1 << 16, pos)
        pos -= step
        f.seek(pos)
        newline = f.read(step).rfind(b"\n")
        if newline >= 0:
            keep = pos + newline + 1
            break
    f.truncate(keep)
    return size - keep


def scan_output(path: Path, *, reviser: str, instruction_version: str, tokenizer_name: str) -> ExistingOutput:
    """Ids already labelled in `path`. A partial last line (cut by a kill) is removed from the file;
    a malformed complete line, a repeated id or a record of another reviser/tokenizer is an error."""
    found = ExistingOutput()
    if not path.exists():
        return found
    with open(path, "rb+") as f:
        cut = cut_partial_last_line(f)
        if cut:
            log.warning("%s: cutting a partial last line (%d bytes) left by an interrupted run", path, cut)
            found.cut_partial_line = True
        f.seek(0)
        expected = {"reviser": reviser, "instruction_version": instruction_version, "tokenizer": tokenizer_name}
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(f"{where}: corrupt output line ({exc}); fix or move the file away") from exc
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise DataError(f"{where}: not a labelled record (no string 'id')")
            for key, value in expected.items():
                if record.get(key) != value:
                    raise DataError(f"{where}: written with {key} {record.get(key)!r} but this run uses "
                                    f"{value!r}; write to another --out (or move this file away)")
            if record["id"] in found.ids:
                raise DataError(f"{where}: id {record['id']!r} appears twice in the output")
            found.ids.add(record["id"])
            found.records += 1
    return found


def reorder_output(path: Path, order: Sequence[str]) -> None:
    """Rewrite `path` atomically with its records in the order of `order` (unknown ids last, as found).

    Streams: only (rank, offset, length) per line is held in memory, not the records.
    """
    rank = {pair_id: i for i, pair_id in enumerate(order)}
    entries: list[tuple[int, int, int, int]] = []
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(path, "rb") as src:
        offset = 0
        for index, line in enumerate(src):
            if line.strip():
                entries.append((rank.get(json.loads(line)["id"], len(rank)), index, offset, len(line)))
            offset += len(line)
        entries.sort()
        with open(tmp, "wb") as dst:
            for _, _, line_offset, length in entries:
                src.seek(line_offset)
                line = src.read(length)
                dst.write(line if line.endswith(b"\n") else line + b"\n")
            dst.flush()
            os.fsync(dst.fileno())
    os.replace(tmp, path)


def summarize_output(path: Path) -> LabelSummary:
    summary = LabelSummary()
    if path.exists():
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    summary.add(json.loads(line))
    return summary


@contextlib.contextmanager
def output_lock(path: Path) -> Iterator[None]:
    """One worker per output file: two appending to one file would duplicate records."""
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "w") as lock_file:
        try:
            import fcntl

            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no fcntl (Windows): run unlocked
            pass
        except BlockingIOError as exc:
            raise RuntimeError(f"{path} is being written by another `tlcr label` process") from exc
        yield


# ----------------------------------------------------------------------------- the run
def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when installed (it comes with uvicorn[standard]), else on asyncio.

    Why: at high concurrency the HTTP stack is CPU-bound, and uvloop cut the CPU per revised pair by
    ~15% in benchmarks/labeling.py.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


@dataclass(frozen=True)
class WorkerConfig:
    out: Path
    tokenizer_name: str
    concurrency: int = 8
    filters: FilterConfig = field(default_factory=FilterConfig)
    progress: bool = True
    ledger_save_every_s: float = 2.0
    workers: int = 1  # > 1: processes making the (openai) reviser's calls and labelling, see the module docstring
    worker_start: StartMethod | None = None  # how they start; None: labeling.revision_processes's default


@dataclass
class RunResult:
    summary: LabelSummary        # over the whole output file, this run and earlier ones
    written: int = 0             # records appended by this run
    by_workers: int = 0          # of which labelled in worker processes (the rest: while they started)
    already_done: int = 0        # pairs skipped because the output had them
    duplicates_dropped: int = 0  # exact repeats in the input
    unfinished: list[str] = field(default_factory=list)  # ids left unlabelled (retries exhausted)
    not_sent: int = 0            # pairs recorded failed as too long for the reviser's context, not sent
    cut_partial_line: bool = False

    @property
    def complete(self) -> bool:
        return not self.unfinished


async def label_pairs(pairs: Sequence[PreferencePair], reviser: Reviser, tokenizer: PreTrainedTokenizerBase,
                      config: WorkerConfig, ledger_file: LedgerFile | None = None) -> RunResult:
    """Label `pairs` into `config.out` (resuming it if it exists); see the module docstring."""
    if config.concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {config.concurrency}")
    if config.workers > 1 and not isinstance(reviser, OpenAIReviser):
        raise ValueError(f"workers > 1 needs the openai reviser (the {reviser.name!r} reviser makes no calls)")
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    unique, duplicates = dedupe_pairs(pairs)
    with output_lock(out):
        existing = scan_output(out, reviser=reviser.name, instruction_version=reviser.instruction_version,
                               tokenizer_name=config.tokenizer_name)
        todo = [p for p in unique if p.id not in existing.ids]
        result = RunResult(summary=LabelSummary(), already_done=len(unique) - len(todo),
                           duplicates_dropped=duplicates, cut_partial_line=existing.cut_partial_line)
        pending = iter(todo)
        budget = reviser.budget if isinstance(reviser, OpenAIReviser) else None
        with open(out, "a", encoding="utf-8") as handle, \
                tqdm(total=len(todo), disable=not config.progress, desc="labeling", unit="pair") as bar:

            # Revisions go through a queue to one labelling coroutine, so a reviser coroutine sends its next
            # call as soon as an answer arrives and tokenizing/labelling runs while that call is in flight.
            # Why: calls issued together come back together, and labelling each before asking again put the
            # labelling of the whole wave on every call's path. In benchmarks/labeling.py (30 waves, quiet
            # machine, runs alternated) this took c=32 from 0.90-0.91 to 0.93-0.98 and c=256 from 0.55 to
            # 0.59 of concurrency / latency. The bound keeps at most `concurrency` answers waiting.
            revised: asyncio.Queue[tuple[PreferencePair, Revision] | None] = asyncio.Queue(config.concurrency)

            async def revise(lane: int) -> None:
                for pair in pending:  # one shared iterator: each pair is taken by exactly one coroutine
                    why = too_long_texts({"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected},
                                         config.filters.max_chars)
                    if why is not None:  # not sent to the reviser (nor tokenized)
                        appender.append(too_long_record(pair, why, reviser=reviser.name,
                                                        instruction_version=reviser.instruction_version,
                                                        tokenizer_name=config.tokenizer_name))
                        result.written += 1
                        bar.update(1)
                        continue
                    if budget is not None and (detail := budget.too_long(pair)) is not None:
                        # not sent: the endpoint would refuse it (a 400) after queueing it
                        appender.append(failed_record(pair, TOO_LONG_FOR_REVISER, detail, reviser=reviser.name,
                                                      instruction_version=reviser.instruction_version,
                                                      tokenizer_name=config.tokenizer_name))
                        result.written += 1
                        result.not_sent += 1
                        bar.update(1)
                        continue
                    try:
                        if processes is None or not processes.ready:  # labelled here while the workers start
                            await revised.put((pair, await reviser.revise(pair)))
                            continue
                        appender.append_line(await processes.label(pair, lane))  # labelled there
                        result.by_workers += 1
                    except TransientReviserError as exc:
                        log.warning("%s", exc)
                        result.unfinished.append(pair.id)
                    else:
                        result.written += 1
                    bar.update(1)

            async def label() -> None:
                while (item := await revised.get()) is not None:
                    pair, revision = item
                    appender.append(make_record(pair, revision, tokenizer, reviser=reviser.name,
                                                instruction_version=reviser.instruction_version,
                                                tokenizer_name=config.tokenizer_name, filters=config.filters))
                    result.written += 1
                    bar.update(1)

            async def revise_all() -> None:
                await asyncio.gather(*revisers)
                await revised.put(None)  # the labeller stops after the last revision

            def save_ledger() -> None:
                if processes is not None:
                    processes.merge_usage()
                if ledger_file is not None:
                    ledger_file.save()

            async def save_ledger_periodically() -> None:
                while ledger_file is not None:
                    await asyncio.sleep(config.ledger_save_every_s)
                    save_ledger()

            lanes = min(config.concurrency, max(len(todo), 1))
            processes: RevisionProcesses | None = None
            if min(config.workers, lanes) > 1:  # one pair left: labelled here, as with workers = 1
                assert isinstance(reviser, OpenAIReviser)
                processes = RevisionProcesses(reviser, min(config.workers, lanes), lanes, tokenizer=tokenizer,
                                              tokenizer_name=config.tokenizer_name, filters=config.filters,
                                              start_method=config.worker_start)
            appender = RecordAppender(handle)
            saver = asyncio.create_task(save_ledger_periodically())
            revisers: list[asyncio.Task[None]] = []
            tasks: list[asyncio.Task[None]] = []
            try:
                if processes is not None and processes.start_method == "fork":
                    await processes.start()  # ready in milliseconds: every call is made there
                revisers = [asyncio.create_task(revise(lane)) for lane in range(lanes)]
                tasks = [asyncio.create_task(revise_all()), asyncio.create_task(label())]
                if processes is not None and not processes.ready:
                    # Not waited for: a spawned worker takes ~1.4 s of CPU to start (importing openai and
                    # transformers). Making the calls here meanwhile took a 7,680-pair run at c=256 with 2 workers
                    # in benchmarks/labeling.py from 0.68-0.72 to 0.73-0.74 of the ideal (3 runs each, minutes apart).
                    tasks.append(asyncio.create_task(processes.start()))
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                for task in (*revisers, *tasks, saver):
                    task.cancel()
                await asyncio.gather(*revisers, *tasks, saver, return_exceptions=True)
                await appender.aclose()
                if processes is not None:
                    await processes.aclose()
                save_ledger()
        if result.complete:
            reorder_output(out, [p.id for p in unique])
    result.summary = summarize_output(out)
    return result


class RecordAppender:
    """Appends one JSON line per record, written and flushed at once, so the line is in the OS and a
    `kill -9` of this process cannot lose it. The fsync (which only matters if the OS itself dies) runs
    in a thread, one at a time, covering every line written before it started (group commit): the
    event loop never waits on the disk, which at ~3 ms per fsync would cap a run at ~300 records/s.
    """

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle
        self._unsynced = False
        self._syncer: asyncio.Task[None] | None = None

    def append(self, record: dict[str, Any]) -> None:
        self.append_line(json.dumps(record, ensure_ascii=False))

    def append_line(self, line: str) -> None:
        """Append one record already serialised as JSON (without its newline)."""
        self._handle.write(line + "\n")
        self._handle.flush()
        self._unsynced = True
        if self._syncer is None or self._syncer.done():
            if self._syncer is not None and self._syncer.exception() is not None:
                raise OSError(f"cannot sync {self._handle.name}") from self._syncer.exception()
            self._syncer = asyncio.get_running_loop().create_task(self._sync())

    async def _sync(self) -> None:
        while self._unsynced:
            self._unsynced = False
            await asyncio.to_thread(os.fsync, self._handle.fileno())

    async def aclose(self) -> None:
        if self._syncer is not None:
            await self._syncer
        self._handle.flush()
        os.fsync(self._handle.fileno())

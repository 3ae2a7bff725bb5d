"""Reading and appending JSON Lines (optionally gzipped) with errors that name file and line."""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

OnError = Literal["raise", "skip"]


class DataError(ValueError):
    """Bad input data; the message names the file and line (or record) at fault."""


@dataclass
class SkipReport:
    """Records skipped under `on_error='skip'`, counted and kept for the end-of-run report."""

    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        self.skipped += 1
        if len(self.reasons) < 100:  # keep the report readable on huge bad files
            self.reasons.append(reason)

    def summary(self) -> str:
        if not self.skipped:
            return "no records skipped"
        shown = "\n  ".join(self.reasons[:10])
        more = f"\n  ... and {self.skipped - 10} more" if self.skipped > 10 else ""
        return f"{self.skipped} records skipped:\n  {shown}{more}"


def iter_jsonl(path: str | os.PathLike[str], on_error: OnError = "raise",
               report: SkipReport | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line.

    Malformed JSON, non-object lines and undecodable bytes raise `DataError` naming file and line,
    or with on_error='skip' are counted in `report` and skipped — never dropped silently.
    """
    report = report if report is not None else SkipReport()
    with open(path, "rb") as raw_file:
        raw: Any = gzip.GzipFile(fileobj=raw_file) if str(path).endswith(".gz") else raw_file
        try:
            for lineno, raw_line in enumerate(raw, start=1):
                problem = None
                try:
                    line = raw_line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    problem = f"{path}:{lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
                else:
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        problem = f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})"
                    else:
                        if not isinstance(obj, dict):
                            problem = f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                if problem is not None:
                    if on_error == "raise":
                        raise DataError(problem)
                    report.add(problem)
                    continue
                yield lineno, obj
        except (OSError, EOFError) as exc:  # truncated or corrupt gzip
            raise DataError(f"{path}: cannot read ({exc})") from exc


def append_jsonl(handle: io.TextIOBase, record: dict[str, Any]) -> None:
    """Write one record as one line and flush it to the OS, so a crash loses at most this line."""
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def write_jsonl(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, p)

"""Per-step training metrics to TensorBoard, a JSONL file and a CSV file in the run directory.

JSONL (`metrics.jsonl`) is the source of truth: one fsync'd line per step, so a killed run loses at most
the step in flight. On resume, rows after the checkpoint's step are dropped (those steps are re-run)
and TensorBoard purges the same steps, so every file shows each step once.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tlcr.data.jsonl import DataError, append_jsonl, write_jsonl

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All logged rows of a run, in step order."""
    path = Path(run_dir) / METRICS_JSONL
    if not path.exists():
        raise DataError(f"{path}: no metrics file (is {run_dir} a training run directory?)")
    rows = _complete_rows(path)
    rows.sort(key=lambda r: r["step"])
    return rows


def _complete_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics file; a torn last line (the run was killed mid-write) is dropped, any other bad
    line raises DataError naming file and line."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    lines = lines[:-1]  # after the final newline: "" for a complete file, the torn piece otherwise
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(row, dict) or "step" not in row:
            raise DataError(f"{path}:{lineno}: a metrics row must be a JSON object with a 'step'")
        rows.append(row)
    return rows


class MetricsLogger:
    """Append metrics rows; only the main process should construct one with `enabled=True`."""

    def __init__(self, run_dir: str | os.PathLike[str], *, resume_step: int | None = None,
                 tensorboard: bool = True, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._writer: Any = None
        self._columns: list[str] = []
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / METRICS_JSONL
        self.csv_path = self.run_dir / METRICS_CSV
        if resume_step is not None and self.jsonl_path.exists():
            self._truncate_after(resume_step)
        else:
            # A fresh run into an old directory would interleave two runs' curves.
            self.jsonl_path.unlink(missing_ok=True)
            shutil.rmtree(self.run_dir / TENSORBOARD_DIR, ignore_errors=True)
        self._rewrite_csv()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._writer = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR), purge_step=purge)
        self._handle = open(self.jsonl_path, "a", encoding="utf-8")

    def _truncate_after(self, step: int) -> None:
        kept = [row for row in _complete_rows(self.jsonl_path) if row["step"] <= step]
        write_jsonl(self.jsonl_path, kept)

    def _rewrite_csv(self) -> None:
        rows = _complete_rows(self.jsonl_path) if self.jsonl_path.exists() else []
        columns: list[str] = ["step"]
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        self._columns = columns
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.csv_path)

    def log(self, step: int, metrics: Mapping[str, float | int | str | None]) -> None:
        if not self.enabled:
            return
        row: dict[str, Any] = {"step": step}
        for key, value in metrics.items():
            row[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        append_jsonl(self._handle, row)  # type: ignore[arg-type]
        if any(key not in self._columns for key in row):
            self._rewrite_csv()  # a new metric appeared: the CSV header must grow
        else:
            with open(self.csv_path, "a", newline="", encoding="utf-8") as handle:
                csv.DictWriter(handle, fieldnames=self._columns).writerow(row)
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(key, value, global_step=step)
            self._writer.flush()

    def write_json(self, name: str, payload: Mapping[str, Any]) -> None:
        """A small JSON side file in the run directory (config, summary), written atomically."""
        if not self.enabled:
            return
        path = self.run_dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
        os.replace(tmp, path)

    def close(self) -> None:
        if not self.enabled:
            return
        self._handle.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

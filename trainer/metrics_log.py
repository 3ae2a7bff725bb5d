"""Per-step training metrics through accelerate's trackers: `metrics.jsonl` in the run directory, always (the
run's record, read by `tlcr plot`, the pipeline and the benchmarks), plus the trackers `report_to` names
(accelerate's: tensorboard, wandb, mlflow, ...; spelled as transformers' `TrainingArguments.report_to`).

JSONL is the source of truth: one fsync'd line per step, so a killed run loses at most the step in flight. On
resume, rows after the checkpoint's step are dropped (those steps are re-run) and TensorBoard purges the same
steps, so both show each step once.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from accelerate.tracking import GeneralTracker, on_main_process

from tlcr.core.data.jsonl import DataError, append_jsonl, write_jsonl

METRICS_JSONL = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"  # accelerate's logging_dir: TensorBoard writes to tensorboard/<project name>/
TRACKING_PROJECT = "tlcr-ppo"  # the project (wandb, mlflow...) or run folder (tensorboard) name


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


class JSONLTracker(GeneralTracker):
    """An accelerate tracker writing one fsync'd JSON line per logged step to `<run_dir>/metrics.jsonl`, on the
    main process only. `start` (from `Accelerator.init_trackers`) truncates the file to the rows up to
    `resume_step`, or, with `resume_step` None, starts a fresh file: an old run's rows would interleave."""

    name = "jsonl"
    requires_logging_directory = False

    def __init__(self, run_dir: str | os.PathLike[str], resume_step: int | None = None) -> None:
        super().__init__()
        self.path = Path(run_dir) / METRICS_JSONL
        self.resume_step = resume_step  # set before init_trackers when the resumed step is known later
        self._handle: IO[str] | None = None

    @property
    def tracker(self) -> IO[str] | None:
        return self._handle

    @on_main_process
    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.resume_step is not None and self.path.exists():
            write_jsonl(self.path, [row for row in _complete_rows(self.path) if row["step"] <= self.resume_step])
        else:
            self.path.unlink(missing_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")

    @on_main_process
    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        if step is None:
            raise ValueError("metrics.jsonl rows need a step: pass step= to Accelerator.log")
        if self._handle is None:
            raise RuntimeError(f"{self.path}: log before start (call Accelerator.init_trackers first)")
        row: dict[str, Any] = {"step": step}
        for key, value in values.items():
            row[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        append_jsonl(self._handle, row)  # type: ignore[arg-type]

    @on_main_process
    def finish(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def tracker_names(report_to: str | Sequence[str]) -> list[str]:
    """The accelerate trackers `report_to` names: one, several (a list or comma-separated), "all" (every installed
    one) or "none". ValueError names an unknown or uninstalled tracker."""
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    parts = report_to.split(",") if isinstance(report_to, str) else list(report_to)
    names = list(dict.fromkeys(str(name).strip() for name in parts if str(name).strip()))
    installed = [str(tracker) for tracker in get_available_trackers()]
    if names in ([], ["none"]):
        return []
    if names == ["all"]:
        return installed
    known = [str(tracker) for tracker in LoggerType if tracker is not LoggerType.ALL]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"report_to: unknown tracker(s) {', '.join(unknown)}; choose from {', '.join(known)}, "
                         "or all, or none alone")
    missing = [name for name in names if name not in installed]
    if missing:
        raise ValueError(f"report_to: {', '.join(missing)} is not installed here (installed: "
                         f"{', '.join(installed) or 'none'})")
    return names


def start_tracking(accelerator: Any, run_dir: Path, jsonl: JSONLTracker, resume_step: int | None) -> None:
    """Start every tracker of `accelerator` (built with `log_with=[jsonl, *tracker_names(...)]` and
    `project_config=tracking_project(run_dir)`) for a fresh run, or for one resumed after `resume_step`."""
    jsonl.resume_step = resume_step
    init_kwargs: dict[str, dict[str, Any]] = {}
    if resume_step is None:
        if accelerator.is_main_process:
            shutil.rmtree(run_dir / TENSORBOARD_DIR, ignore_errors=True)  # an old run's curves would interleave
    else:
        init_kwargs["tensorboard"] = {"purge_step": resume_step + 1}
    accelerator.init_trackers(TRACKING_PROJECT, init_kwargs=init_kwargs)


def finish_tracking(accelerator: Any) -> None:
    """Close every tracker. Not `Accelerator.end_training`: that also ends the process group, which the run still
    needs to export its models."""
    for tracker in accelerator.trackers:
        tracker.finish()


def tracking_project(run_dir: Path) -> Any:
    """accelerate's project configuration for trackers that write files: under `<run_dir>/tensorboard`."""
    from accelerate.utils import ProjectConfiguration

    return ProjectConfiguration(logging_dir=str(run_dir / TENSORBOARD_DIR))

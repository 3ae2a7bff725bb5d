"""PPO metrics through accelerate's trackers (a real CPU Accelerator): metrics.jsonl from our JSONL tracker
beside TensorBoard, resume truncation and purge, torn lines, bad rows named by line, and `report_to` names."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate import Accelerator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tlcr.core.data.jsonl import DataError
from tlcr.trainer.metrics_log import (
    TENSORBOARD_DIR,
    TRACKING_PROJECT,
    JSONLTracker,
    finish_tracking,
    read_metrics,
    start_tracking,
    tracker_names,
    tracking_project,
)
from tlcr.trainer.ppo_config import PPOConfig, PPOConfigError


def log_run(run_dir: Path, rows: dict[int, dict[str, float]], *, resume_step: int | None = None,
            report_to: str = "tensorboard") -> None:
    """Log `rows` ({step: metrics}) the way PPOTrainer does: accelerate's trackers, ours included."""
    metrics_file = JSONLTracker(run_dir)
    accelerator = Accelerator(cpu=True, log_with=[metrics_file, *tracker_names(report_to)],
                              project_config=tracking_project(run_dir))
    start_tracking(accelerator, run_dir, metrics_file, resume_step)
    try:
        for step, values in rows.items():
            accelerator.log(values, step=step)
    finally:
        finish_tracking(accelerator)


def tensorboard_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR / TRACKING_PROJECT))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


def test_logs_jsonl_and_tensorboard(tmp_path: Path) -> None:
    log_run(tmp_path, {1: {"kl": 0.5, "response_length": 10},
                       2: {"kl": float("nan"), "response_length": 12, "oracle_score": 0.25}})  # a new key appears
    assert read_metrics(tmp_path) == [{"step": 1, "kl": 0.5, "response_length": 10},
                                      {"step": 2, "kl": None, "response_length": 12, "oracle_score": 0.25}]
    assert tensorboard_scalars(tmp_path, "response_length") == [(1, 10.0), (2, 12.0)]
    assert not (tmp_path / "metrics.csv").exists()


def test_resume_drops_steps_after_the_checkpoint_in_every_tracker(tmp_path: Path) -> None:
    log_run(tmp_path, {step: {"kl": float(step)} for step in (1, 2, 3)})
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 4, "kl"')  # killed mid-write
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    log_run(tmp_path, {3: {"kl": 30.0}}, resume_step=2)
    assert [(r["step"], r["kl"]) for r in read_metrics(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert tensorboard_scalars(tmp_path, "kl") == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_fresh_run_replaces_old_metrics(tmp_path: Path) -> None:
    log_run(tmp_path, {1: {"kl": 1.0}, 2: {"kl": 2.0}})
    log_run(tmp_path, {1: {"kl": 9.0}})
    assert read_metrics(tmp_path) == [{"step": 1, "kl": 9.0}]
    assert tensorboard_scalars(tmp_path, "kl") == [(1, 9.0)]


def test_report_to_none_writes_only_the_jsonl(tmp_path: Path) -> None:
    log_run(tmp_path, {1: {"kl": 1.0}}, report_to="none")
    assert read_metrics(tmp_path) == [{"step": 1, "kl": 1.0}]
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def test_jsonl_rows_need_a_step_and_a_started_tracker(tmp_path: Path) -> None:
    metrics_file = JSONLTracker(tmp_path)
    with pytest.raises(RuntimeError, match="log before start"):
        metrics_file.log({"kl": 1.0}, step=1)
    metrics_file.start()
    with pytest.raises(ValueError, match="need a step"):
        metrics_file.log({"kl": 1.0})
    metrics_file.finish()


def test_report_to_names() -> None:
    assert tracker_names("none") == [] and tracker_names([]) == []
    assert tracker_names("tensorboard, tensorboard") == ["tensorboard"] == tracker_names(["tensorboard"])
    assert "tensorboard" in tracker_names("all")
    with pytest.raises(ValueError, match=r"unknown tracker.* jsonl; choose from .*tensorboard"):
        tracker_names("jsonl")
    with pytest.raises(ValueError, match=r"unknown tracker.* none"):
        tracker_names("none,tensorboard")
    with pytest.raises(PPOConfigError, match=r"report_to: unknown tracker.* tensorbord"):
        PPOConfig(policy="p", report_to="tensorbord")
    assert PPOConfig(policy="p").report_to == "tensorboard"


def test_bad_rows_are_named_by_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no metrics file"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "kl": 0}\nnot json\n{"step": 3}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl:2: malformed JSON"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"kl": 2}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl:2: a metrics row must be a JSON object with a 'step'"):
        read_metrics(tmp_path)

"""Metrics logger: JSONL + CSV + TensorBoard, resume truncation, torn lines, bad rows named by line."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from tlcr.data.jsonl import DataError
from trainer.metrics_log import MetricsLogger, read_metrics


def test_logs_jsonl_csv_and_tensorboard(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path) as log:
        log.log(1, {"kl": 0.5, "response_length": 10})
        log.log(2, {"kl": float("nan"), "response_length": 12, "oracle_score": 0.25})  # a new column appears
    rows = read_metrics(tmp_path)
    assert rows == [{"step": 1, "kl": 0.5, "response_length": 10},
                    {"step": 2, "kl": None, "response_length": 12, "oracle_score": 0.25}]
    with open(tmp_path / "metrics.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["step", "kl", "response_length", "oracle_score"]
    assert [r["step"] for r in table] == ["1", "2"] and table[1]["oracle_score"] == "0.25"
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_resume_drops_steps_after_the_checkpoint_and_repairs_a_torn_line(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        for step in (1, 2, 3):
            log.log(step, {"kl": float(step)})
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 4, "kl"')  # killed mid-write
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    with MetricsLogger(tmp_path, resume_step=2, tensorboard=False) as log:
        log.log(3, {"kl": 30.0})
    assert [(r["step"], r["kl"]) for r in read_metrics(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    with open(tmp_path / "metrics.csv", newline="") as handle:
        assert [r["kl"] for r in csv.DictReader(handle)] == ["1.0", "2.0", "30.0"]


def test_fresh_run_replaces_old_metrics(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(1, {"kl": 1.0})
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(1, {"kl": 9.0})
    assert read_metrics(tmp_path) == [{"step": 1, "kl": 9.0}]


def test_disabled_logger_writes_nothing(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path / "run", enabled=False) as log:
        log.log(1, {"kl": 1.0})
        log.write_json("x.json", {"a": 1})
    assert not (tmp_path / "run").exists()


def test_bad_rows_are_named_by_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no metrics file"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "kl": 0}\nnot json\n{"step": 3}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl:2: malformed JSON"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"kl": 2}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl:2: a metrics row must be a JSON object with a 'step'"):
        read_metrics(tmp_path)


def test_write_json_is_readable(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.write_json("ppo_config.json", {"reward_mode": "tlcr", "lr": math.pi})
    assert json.loads((tmp_path / "ppo_config.json").read_text())["reward_mode"] == "tlcr"

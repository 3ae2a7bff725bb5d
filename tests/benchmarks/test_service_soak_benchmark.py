"""benchmarks/service_soak.py end to end at a tiny size: a time series of forward times, the soaked/fresh
comparison, the CSV and plot written, the verdict computed from the rows."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "service_soak.py"


@pytest.mark.slow
def test_tiny_soak_logs_forward_times_and_compares_with_a_fresh_process(tmp_path: Path) -> None:
    out, table, plot = tmp_path / "soak.json", tmp_path / "soak.csv", tmp_path / "soak.png"
    command = [sys.executable, str(SCRIPT), "--hidden", "32", "--layers", "1", "--heads", "2", "--threads", "1",
               "--minutes", "0.1", "--interval-s", "2", "--clients", "4", "--items-per-request", "2",
               "--fresh-rounds", "2", "--fresh-seconds", "1", "--out", str(out), "--csv", str(table),
               "--plot", str(plot)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    intervals = result["intervals"]
    assert intervals and all(i["batches"] > 0 and i["forward_ms"] > 0 and i["rss_mib"] > 0
                             and i["minor_faults_per_batch"] >= 0 for i in intervals)
    assert len(result["side_by_side"]) == 2 and result["soaked_over_fresh"] > 0
    rows = list(csv.DictReader(table.open()))
    assert [float(r["forward_ms"]) for r in rows] == [i["forward_ms"] for i in intervals]
    assert plot.stat().st_size > 0
    assert "soaked / fresh process, side by side" in done.stdout

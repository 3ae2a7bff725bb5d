"""benchmarks/hostile.py end to end at a tiny size, as users run it: every attack answered with its expected
status, the service still ready, and the latency and memory lines printed (the goals themselves depend on
the machine and are judged by the full run, not here)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.support import processes

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "hostile.py"


@pytest.mark.slow
def test_tiny_run_answers_every_attack_as_expected(tmp_path: Path) -> None:
    out = tmp_path / "hostile.json"
    command = [sys.executable, str(SCRIPT), "--max-length", "64", "--max-body-bytes", "300000", "--max-items", "4",
               "--max-offsets", "64", "--parallel", "2", "--rounds", "1", "--out", str(out)]
    done = processes.run(command, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["unexpected"] == [] and report["ready_after"] is True, done.stdout
    assert report["polls"] > 0 and report["healthz_p99_ms"] <= report["healthz_max_ms"]
    assert "/healthz during the attacks" in done.stdout and "server peak RSS growth" in done.stdout
    assert done.stdout.count("statuses [") == 14
    assert (done.returncode == 0) is report["met"]

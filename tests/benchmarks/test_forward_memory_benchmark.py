"""benchmarks/forward_memory.py end to end at a tiny size: both malloc settings measured in fresh processes, the
table and the JSON agree."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.support import processes

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "forward_memory.py"


@pytest.mark.slow
def test_tiny_run_measures_both_settings(tmp_path: Path) -> None:
    out = tmp_path / "forward_memory.json"
    command = [sys.executable, str(SCRIPT), "--hidden", "32", "--layers", "1", "--heads", "2", "--sizes", "2,4",
               "--duration", "0.2", "--rounds", "1", "--out", str(out)]
    done = processes.run(command, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["runs"]) == {"default", "kept"} and all(len(r) == 1 for r in report["runs"].values())
    for size in ("2", "4"):
        medians = report["medians"][size]
        assert medians["default"]["ms_per_batch"] > 0 and medians["kept"]["ms_per_batch"] > 0
        ratio = medians["kept"]["ms_per_batch"] / medians["default"]["ms_per_batch"]
        assert f"| {size} | " in done.stdout and f"| {ratio:.2f} |" in done.stdout

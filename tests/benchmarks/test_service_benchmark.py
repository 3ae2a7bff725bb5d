"""benchmarks/service.py end to end at a tiny size: all three systems measured, no request failed, the table
and the JSON agree (the script runs as users run it, in its own process, with both servers on loopback)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.support import processes

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "service.py"


@pytest.mark.slow
def test_tiny_run_measures_every_system_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "service.json"
    command = [sys.executable, str(SCRIPT), "--hidden", "32", "--layers", "1", "--heads", "2", "--clients", "1,4",
               "--duration", "0.4", "--rounds", "1", "--items", "16", "--compare-forward-process", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = processes.run(command, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    systems = {(row["system"], row["clients"]) for row in results["results"]}
    separate = "ours, forward process"
    assert systems == {("in-process", None), ("in-process, unbatched", None), ("ours", 1), ("naive", 1),
                       ("ours", 4), ("naive", 4), ("in-process, batches of the items in flight", 4),
                       (separate, 1), (separate, 4)}
    for row in results["results"]:
        assert row["errors"] == 0 and row["tokens_per_s"] > 0, row
        if row["system"] in ("ours", "naive", separate):
            assert row["requests"] > 0 and row["p50_ms"] <= row["p99_ms"], row
            # each server's CPU per request, split into its event-loop thread and the rest (/proc, clock ticks);
            # the rest includes child processes (where --forward-process runs the forwards)
            assert row["loop_cpu_ms_per_request"] >= 0 and row["rest_cpu_ms_per_request"] > 0, row
    ours4 = next(r for r in results["results"] if r["system"] == "ours" and r["clients"] == 4)
    naive4 = next(r for r in results["results"] if r["system"] == "naive" and r["clients"] == 4)
    assert results["ratios"]["4"]["ours_vs_naive"] == pytest.approx(ours4["tokens_per_s"] / naive4["tokens_per_s"])
    in_flight4 = next(r for r in results["results"] if r["system"].endswith("items in flight"))
    assert results["ratios"]["4"]["ours_vs_in_process_in_flight"] == pytest.approx(
        ours4["tokens_per_s"] / in_flight4["tokens_per_s"])
    assert results["ratios"]["4"]["forward_process_vs_ours"] > 0
    # one round: the per-round ratio is the ratio itself
    ratios4 = results["ratios"]["4"]
    assert ratios4["ours_vs_naive_round_median"] == pytest.approx(ratios4["ours_vs_naive"])
    assert "4 client(s), per round: ours / naive" in done.stdout
    assert "| 4 |" in done.stdout
    assert "CPU ms per request: the server's event-loop thread" in done.stdout
    assert "per-request goals" not in done.stdout  # needs both 1 and 16 clients

"""benchmarks/compare_methods.py: aggregation over seeds (hand-computed), argument errors, the table and plot."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def compare(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("compare_methods")


def test_aggregate_mean_and_sample_std_over_seeds(compare: ModuleType) -> None:
    per_seed = [{"policies": {"SFT": {"oracle_score": 0.2, "kl_to_sft": 0.0}, "TLCR": {"oracle_score": 0.5}}},
                {"policies": {"SFT": {"oracle_score": 0.4, "kl_to_sft": 0.0}, "TLCR": {"oracle_score": 0.9}}},
                {"policies": {"SFT": {"oracle_score": 0.6, "kl_to_sft": 0.0}, "TLCR": {"oracle_score": math.nan}}}]
    table = compare.aggregate(per_seed)
    assert table["SFT"]["oracle_score"] == {"mean": pytest.approx(0.4), "std": pytest.approx(0.2), "n": 3}
    # a NaN (metric undefined for that seed) is left out, not averaged in
    assert table["TLCR"]["oracle_score"]["mean"] == pytest.approx(0.7)
    assert table["TLCR"]["oracle_score"]["std"] == pytest.approx(math.sqrt(0.08))
    assert table["TLCR"]["oracle_score"]["n"] == 2
    assert table["SFT"]["kl_to_sft"]["std"] == 0.0


def test_markdown_table_and_plot(compare: ModuleType, tmp_path: Path) -> None:
    table = compare.aggregate([{"policies": {"SFT": {"oracle_score": 0.25, "response_tokens": 12.0}}}])
    text = compare.markdown_table(table)
    assert "| SFT | 0.250 ± 0.000 | 12.000 ± 0.000 |" in text
    path = compare.plot(table, tmp_path / "c.png", "t")
    assert path.stat().st_size > 1000


@pytest.mark.parametrize(("argv", "message"), [
    (["--methods", "sft,ppo"], "unknown method"),
    (["--seeds", "a,b"], "comma-separated integers"),
    (["--source", "/no/such/file.jsonl"], "not 'controlled' and not a file"),
])
def test_bad_arguments_are_named(compare: ModuleType, argv: list[str], message: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        compare.parse_args(argv)
    assert message in capsys.readouterr().err


def test_budgets(compare: ModuleType) -> None:
    assert compare.budget_config("smoke", 1).data_seed == 43
    with pytest.raises(ValueError, match="unknown budget"):
        compare.budget_config("huge", 0)


def test_smoke_budget_two_methods_one_seed_end_to_end(compare: ModuleType, tmp_path: Path) -> None:
    """The real script (its own process: real service on loopback, real training at smoke size), then a rerun
    that reuses the seed's results instead of training again."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "compare"
    command = [sys.executable, compare.__file__, "--seeds", "0", "--methods", "dpo,tlcr", "--budget", "smoke",
               "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((out / "comparison.json").read_text())
    assert set(report["aggregate"]) == {"SFT", "DPO", "TLCR"}
    for policy, row in report["aggregate"].items():
        for metric in ("oracle_score", "continuous_token_reward_sum", "sequence_reward", "response_tokens",
                       "kl_to_sft"):
            assert row[metric]["n"] == 1 and math.isfinite(row[metric]["mean"]), (policy, metric, row)
    assert report["aggregate"]["SFT"]["kl_to_sft"]["mean"] == 0.0
    assert (out / "comparison.png").stat().st_size > 1000
    assert "| TLCR |" in (out / "comparison.md").read_text()

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing" in again.stdout
    assert json.loads((out / "comparison.json").read_text())["aggregate"] == report["aggregate"]

"""benchmarks/compare_methods.py: aggregation over seeds (hand-computed), argument errors, the table and plot."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_methods.py"


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_methods", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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

"""benchmarks/compare_methods.py: the tuning grid, paired statistics and claims on hand-made results, argument
errors, and the smoke budget end to end (real service, real training)."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support import processes


@pytest.fixture(scope="module")
def compare(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("compare_methods")


def _rows(scores: dict[str, float], tokens: float) -> list[dict[str, Any]]:
    return [{"prompt": p, "oracle_score": s, "helpful": 1.0, "complete": 0.0, "tokens": tokens, "wrong": 0.0,
             "style_faults": 1.0 - s, "details": 0.5} for p, s in scores.items()]


def _seed(seed: int, sft: dict[str, float], tlcr: dict[str, float], tlcr_len: float) -> dict[str, Any]:
    def method(scores: dict[str, float], tokens: float) -> dict[str, Any]:
        rows = _rows(scores, tokens)
        return {"rows": rows, "summary": {"oracle_score": sum(scores.values()) / len(scores), "helpful": 1.0,
                                          "complete": 0.0, "tokens": tokens, "kl_to_sft": 0.5}}
    return {"seed": seed, "chosen": {"sft": {}, "tlcr": {"ppo_learning_rate": 1e-4}},
            "test": {"sft": method(sft, 10.0), "tlcr": method(tlcr, tlcr_len)}}


def test_grid_is_the_same_size_for_every_tuned_method(compare: ModuleType) -> None:
    sizes = {m: len(compare.grid(m, "full")) for m in compare.METHODS}
    assert sizes.pop("sft") == 1
    assert set(sizes.values()) == {4}
    assert compare.grid("tlcr", "smoke") == compare.grid("tlcr", "full")[:1]
    assert compare.point_name({"ppo_learning_rate": 5e-05, "ppo_kl_coef": 0.2}) == "learning_rate5e-05-kl_coef0.2"


def test_summary_and_claims_from_paired_differences(compare: ModuleType) -> None:
    per_seed = [_seed(0, {"a": 0.1, "b": 0.3}, {"a": 0.6, "b": 0.8}, 12.0),
                _seed(1, {"a": 0.2, "b": 0.2}, {"a": 0.7, "b": 0.7}, 12.0)]
    table = compare.summary_table(per_seed, ["sft", "tlcr"])
    assert table["tlcr"]["oracle_score"]["per_seed"] == pytest.approx([0.7, 0.7])
    # TLCR − SFT is exactly +0.5 for every (seed, prompt): the interval collapses onto it
    cell = table["tlcr"]["oracle_vs_sft"]
    assert (cell["mean"], cell["low"], cell["high"]) == pytest.approx((0.5, 0.5, 0.5))
    assert cell["significant"]
    assert table["sft"]["length_vs_tlcr"]["mean"] == pytest.approx(-2.0)
    sentences = {c["claim"]: c["sentence"] for c in compare.claims(per_seed, ["sft", "tlcr"])}
    # claims about methods not run are left out
    assert list(sentences) == ["TLCR > SFT", "TLCR: fewer style faults than SFT"]
    assert "+0.500" in sentences["TLCR > SFT"] and "holds (significant)" in sentences["TLCR > SFT"]
    assert "SFT − TLCR = +0.500 per response" in sentences["TLCR: fewer style faults than SFT"]


def test_a_noisy_difference_is_not_called_a_finding(compare: ModuleType) -> None:
    per_seed = [_seed(0, {"a": 0.1, "b": 0.9}, {"a": 0.9, "b": 0.1}, 10.0),
                _seed(1, {"a": 0.5, "b": 0.4}, {"a": 0.4, "b": 0.6}, 10.0)]
    claim = compare.claims(per_seed, ["sft", "tlcr"])[0]
    assert not claim["significant"] and "not significant" in claim["sentence"]


def test_matched_kl_interpolates_from_the_sft_origin(compare: ModuleType) -> None:
    tuning = {"sft": [{"oracle_score": 0.2, "kl_to_sft": 0.0}],
              "tlcr": [{"oracle_score": 0.6, "kl_to_sft": 2.0}, {"oracle_score": 0.4, "kl_to_sft": 1.0}],
              "seq": [{"oracle_score": 0.3, "kl_to_sft": 4.0}]}
    result = compare.matched_kl(tuning, 0.2)
    assert result["kl"] == 2.0  # the smallest of the largest KLs: every method reaches it
    assert result["oracle"]["tlcr"] == pytest.approx(0.6)
    assert result["oracle"]["seq"] == pytest.approx(0.2 + (0.3 - 0.2) * 2.0 / 4.0)


@pytest.mark.parametrize(("argv", "message"), [
    (["--methods", "sft,ppo"], "unknown method"),
    (["--seeds", "a,b"], "comma-separated integers"),
    (["--seeds", "1,1"], "distinct seeds"),
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


@pytest.mark.slow
def test_smoke_budget_end_to_end_and_rerun_reuses_results(compare: ModuleType, tmp_path: Path) -> None:
    """The real script (its own process: real service on loopback, real training at smoke size), then a rerun
    that reuses the seed's results instead of training again."""
    out = tmp_path / "compare"
    command = [sys.executable, compare.__file__, "--seeds", "0", "--methods", "dpo,tlcr", "--budget", "smoke",
               "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = processes.run(command, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((out / "comparison.json").read_text())
    assert set(report["table"]) == {"sft", "dpo", "tlcr"}
    for method, cells in report["table"].items():
        for key in ("oracle_score", "tokens", "kl_to_sft"):
            assert math.isfinite(cells[key]["mean"]), (method, key)
    assert report["table"]["sft"]["kl_to_sft"]["mean"] == 0.0
    assert {c["claim"] for c in report["claims"]} == {"TLCR > SFT", "TLCR > DPO", "TLCR: fewer style faults than SFT"}
    sanity = report["sanity"]["0"]
    assert set(sanity["reward_sums"]) == {"continuous", "fixed"}
    for name in ("comparison.png", "fig7_length.png", "oracle_vs_kl.png"):
        assert (out / name).stat().st_size > 1000
    assert "| TLCR |" in (out / "comparison.md").read_text()

    again = processes.run(command, env=env, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing" in again.stdout
    assert json.loads((out / "comparison.json").read_text())["table"] == report["table"]

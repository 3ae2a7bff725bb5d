"""benchmarks/compare_methods.py: the per-seed tuning grid and pick, paired statistics, claims, the oracle-vs-KL
frontier and the reproducibility verdicts on hand-made results, argument errors, and the smoke budget end to end
twice (OMP_NUM_THREADS=1 and 2: real service, real training, parallel seed workers)."""

from __future__ import annotations

import json
import math
import os
import subprocess
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
    return {"seed": seed, "chosen": {"sft": {}, "tlcr": {"ppo_learning_rate": 1e-4, "ppo_steps": 50}},
            "test": {"sft": method(sft, 10.0), "tlcr": method(tlcr, tlcr_len)}}


def test_every_tuned_method_has_a_grid_of_the_same_size_with_training_length_in_it(compare: ModuleType) -> None:
    full = compare.BUDGETS["full"]
    sizes = {m: len(compare.grid(m, full)) for m in compare.METHODS}
    assert sizes["sft"] == sizes["tlcr_positive_only"] == sizes["tlcr_negative_only"] == 0  # not tuned
    assert sizes["seq"] == sizes["tlcr_fixed"] == sizes["tlcr"] == 12  # lr × β × {15, 30, 60} steps
    assert sizes["dpo"] == 8  # lr × β × {0.5, 1} epochs
    assert {p["ppo_steps"] for p in compare.grid("tlcr", full)} == {15, 30, 60}
    assert {p["dpo_epochs"] for p in compare.grid("dpo", full)} == {0.5, 1.0}
    # every length of one lr × β is a checkpoint of one training run
    runs = {compare.run_name(p) for p in compare.grid("seq", full)}
    assert len(runs) == 4
    point = {"ppo_learning_rate": 5e-05, "ppo_kl_coef": 0.2, "ppo_steps": 50}
    assert compare.point_name(point) == "learning_rate5e-05-kl_coef0.2-steps50"
    assert compare.run_name(point) == "learning_rate5e-05-kl_coef0.2"
    assert compare.budget_config("full", 3).ppo_steps == 60 and compare.budget_config("full", 3).data_seed == 45


def test_candidates_are_grouped_by_their_training_run_in_grid_order(compare: ModuleType) -> None:
    full = compare.BUDGETS["full"]
    runs = compare.runs_of(compare.grid("tlcr", full))
    assert [len(r) for r in runs] == [3, 3, 3, 3]
    assert [p["ppo_steps"] for p in runs[0]] == [15, 30, 60]
    assert {compare.run_name(p) for p in runs[1]} == {"learning_rate5e-05-kl_coef0.2"}
    # a reduced run keeps the first N candidates of every grid: whole runs first
    assert [len(r) for r in compare.runs_of(compare.grid("seq", full)[:6])] == [3, 3]
    assert len(compare.runs_of(compare.grid("dpo", full)[:6])) == 6  # every DPO candidate is its own run


def test_the_pick_is_the_best_validation_oracle(compare: ModuleType) -> None:
    candidates = [{"point": {"ppo_steps": 25}, "oracle_score": 0.1}, {"point": {"ppo_steps": 50}, "oracle_score": 0.3},
                  {"point": {"ppo_steps": 100}, "oracle_score": 0.3}]
    assert compare.choose(candidates) == {"ppo_steps": 50}  # the first of equals


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
    assert "2/2 seeds > 0" in sentences["TLCR > SFT"]
    assert "only 2 seed(s): not a final result" in sentences["TLCR > SFT"]  # fewer than FINAL_SEEDS
    assert "SFT − TLCR = +0.500 per response" in sentences["TLCR: fewer style faults than SFT"]


def test_a_noisy_difference_is_not_called_a_finding(compare: ModuleType) -> None:
    per_seed = [_seed(0, {"a": 0.1, "b": 0.9}, {"a": 0.9, "b": 0.1}, 10.0),
                _seed(1, {"a": 0.5, "b": 0.4}, {"a": 0.4, "b": 0.6}, 10.0)]
    claim = compare.claims(per_seed, ["sft", "tlcr"])[0]
    assert not claim["significant"] and "not significant" in claim["sentence"]


def test_frontier_keeps_the_best_oracle_up_to_each_kl(compare: ModuleType) -> None:
    points = [(0.0, 0.2), (2.0, 0.1), (1.0, 0.4), (3.0, 0.5), (2.5, 0.45)]
    assert compare.frontier(points) == [(0.0, 0.2), (1.0, 0.4), (2.5, 0.45), (3.0, 0.5)]


def _tuned(seed: int, sft: float, tlcr: list[tuple[float, float]], seq: list[tuple[float, float]]) -> dict[str, Any]:
    def cands(points: list[tuple[float, float]]) -> list[dict[str, Any]]:
        return [{"point": {}, "kl_to_sft": kl, "oracle_score": o} for kl, o in points]
    return {"seed": seed, "tuning": {"sft": [{"point": {}, "kl_to_sft": 0.0, "oracle_score": sft}],
                                     "tlcr": cands(tlcr), "seq": cands(seq)}}


def test_matched_kl_reads_every_seeds_frontier_at_one_common_kl(compare: ModuleType) -> None:
    per_seed = [_tuned(0, 0.2, [(2.0, 0.6), (1.0, 0.4)], [(4.0, 0.3)]),
                _tuned(1, 0.0, [(3.0, 0.3)], [(1.5, 0.6), (0.5, 0.9)])]
    result = compare.matched_kl(per_seed)
    # frontier ends: seed 0 tlcr 2.0, seq 4.0; seed 1 tlcr 3.0, seq 0.5 (1.5 is dominated): common KL 0.5
    assert result["kl"] == 0.5
    assert result["per_seed"]["tlcr"] == pytest.approx([0.2 + 0.2 * 0.5, 0.3 * 0.5 / 3.0])
    assert result["per_seed"]["seq"] == pytest.approx([0.2 + 0.1 * 0.5 / 4.0, 0.9])
    assert result["oracle"]["seq"] == pytest.approx((0.2125 + 0.9) / 2)


def _claim(name: str, mean: float, low: float, high: float) -> dict[str, Any]:
    return {"claim": name, "mean": mean, "low": low, "high": high, "significant": low > 0 or high < 0}


def test_reproducibility_calls_a_claim_robust_only_with_the_same_sign_and_significance(compare: ModuleType) -> None:
    runs = {"OMP_NUM_THREADS=1": {"claims": [_claim("A", 0.2, 0.1, 0.3), _claim("B", 0.25, 0.03, 0.45),
                                             _claim("C", 0.01, -0.05, 0.06), _claim("D", -0.2, -0.3, -0.1),
                                             _claim("E", 0.05, -0.01, 0.1)]},
            "OMP_NUM_THREADS=2": {"claims": [_claim("A", 0.1, 0.02, 0.2), _claim("B", -0.01, -0.07, 0.05),
                                             _claim("C", -0.02, -0.06, 0.03), _claim("D", -0.1, -0.2, -0.01),
                                             _claim("E", -0.1, -0.2, -0.05)]}}
    status = {row["claim"]: row["status"] for row in compare.reproducibility(runs)}
    assert status == {"A": "robust: holds in every run", "B": "not robust",
                      "C": "robust: no significant difference in any run", "D": "robust: reversed in every run",
                      "E": "not robust"}
    text = compare.reproducibility_markdown(compare.reproducibility(runs))
    assert "| B | +0.250 [+0.030, +0.450]* | -0.010 [-0.070, +0.050] | not robust |" in text


@pytest.mark.parametrize(("argv", "message"), [
    (["--methods", "sft,ppo"], "unknown method"),
    (["--seeds", "a,b"], "comma-separated integers"),
    (["--seeds", "1,1"], "distinct seeds"),
    (["--threads", "1"], "at least two distinct"),
    (["--threads", "1,x"], "comma-separated integers"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--max-candidates", "0"], "--max-candidates must be at least 1"),
    (["--rerun-seeds", "5,6"], "--rerun-seeds needs --threads"),
    (["--seeds", "0,1", "--threads", "1,2", "--rerun-seeds", "5"], "needs 2 distinct seeds"),
    (["--seeds", "0,1", "--threads", "1,2", "--rerun-seeds", "5,x"], "comma-separated integers"),
    (["--methods", "seq,tlcr_negative_only"], "add tlcr to --methods"),
])
def test_bad_arguments_are_named(compare: ModuleType, argv: list[str], message: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        compare.parse_args(argv)
    assert message in capsys.readouterr().err


def test_budgets(compare: ModuleType) -> None:
    assert compare.budget_config("smoke", 1).data_seed == 43
    assert compare.budget_config("smoke", 1).ppo_steps == 2  # the longest checkpoint
    with pytest.raises(ValueError, match="unknown budget"):
        compare.budget_config("huge", 0)


@pytest.mark.slow
@pytest.mark.timeout(1500)  # two whole comparisons, 4 seed workers and 4 services: 591 s once on the loaded 2 cores
def test_smoke_budget_twice_with_two_thread_counts_then_a_rerun_reuses_results(compare: ModuleType,
                                                                               tmp_path: Path) -> None:
    """The real script (its own process: seed workers in parallel, one real service per seed on loopback, real
    training at smoke size), once per OMP_NUM_THREADS, the second run on other seeds (--rerun-seeds), with the
    reproducibility verdicts; then a rerun that reuses every seed's results instead of training again."""
    out = tmp_path / "compare"
    command = [sys.executable, compare.__file__, "--seeds", "0,1", "--methods", "dpo,seq,tlcr,tlcr_negative_only",
               "--budget", "smoke", "--jobs", "2", "--threads", "1,2", "--rerun-seeds", "2,3", "--out", str(out)]
    code, output = _run(command, dict(os.environ), timeout=1200)
    assert code == 0, output[-6000:]
    tables = {}
    for threads in (1, 2):
        report = json.loads((out / f"omp-{threads}" / "comparison.json").read_text())
        assert report["omp_num_threads"] == str(threads)
        assert set(report["table"]) == {"sft", "dpo", "seq", "tlcr", "tlcr_negative_only"}
        for method, cells in report["table"].items():
            for key in ("oracle_score", "tokens", "kl_to_sft"):
                assert math.isfinite(cells[key]["mean"]), (method, key)
            assert len(cells["oracle_score"]["per_seed"]) == 2
        assert report["table"]["sft"]["kl_to_sft"]["mean"] == 0.0
        tables[threads] = report["table"]
        for seed, chosen in report["chosen"].items():
            # each seed picked its own candidate from its own grid; the ablation trained at TLCR's
            assert chosen["tlcr"]["ppo_steps"] in (1, 2) and chosen["dpo"]["dpo_epochs"] in (0.5, 1.0), seed
            assert chosen["tlcr_negative_only"] == chosen["tlcr"]
        per_seed = {r["seed"]: r for r in report["per_seed"]}
        assert sorted(per_seed) == ([0, 1] if threads == 1 else [2, 3])  # the second run is another replicate
        assert [len(r["tuning"]["tlcr"]) for r in per_seed.values()] == [4, 4]
        assert {"base", "train PPO", "train DPO", "validate", "test"} == set(report["time_breakdown_s"])
        assert all(c["seeds_positive"] in (0, 1, 2) for c in report["claims"])
        for name in ("comparison.png", "fig7_length.png", "oracle_vs_kl.png"):
            assert (out / f"omp-{threads}" / name).stat().st_size > 1000
    verdicts = json.loads((out / "reproducibility.json").read_text())["claims"]
    assert {v["claim"] for v in verdicts} == {"PPO_seq > SFT", "TLCR > SFT", "TLCR > PPO_seq", "TLCR > DPO",
                                             "TLCR longer than w/o positive", "TLCR: fewer style faults than SFT",
                                             "TLCR: more details than w/o positive"}
    assert all(set(v["runs"]) == {"OMP_NUM_THREADS=1, seeds 0,1", "OMP_NUM_THREADS=2, seeds 2,3"} for v in verdicts)
    assert "| TLCR > PPO_seq |" in (out / "reproducibility.md").read_text()

    code, output = _run([*command[:-6], "--out", str(out / "omp-1")], {**os.environ, "OMP_NUM_THREADS": "1"},
                        timeout=300)
    assert code == 0, output[-6000:]
    assert "reusing 2 finished seed(s)" in output
    assert json.loads((out / "omp-1" / "comparison.json").read_text())["table"] == tables[1]


def _run(command: list[str], env: dict[str, str], *, timeout: float) -> tuple[int, str]:
    """The command in its own process group (its seed workers and reward services too), nothing of it left after."""
    done = processes.run(command, env=env, timeout=timeout, stderr=subprocess.STDOUT)
    return done.returncode, done.stdout


def _validation_rows(scores: list[float]) -> list[dict[str, Any]]:
    return [{"prompt": f"q{i}", "oracle_score": s} for i, s in enumerate(scores)]


def test_pick_stability_tells_a_clear_pick_from_a_coin_flip(compare: ModuleType) -> None:
    clear = compare.pick_stability(["a", "b"], [_validation_rows([0.9, 0.8, 0.9, 0.8]),
                                                _validation_rows([0.1, 0.2, 0.1, 0.0])])
    assert clear["chosen"] == "a" and clear["same_pick"] == 1.0 and clear["gap"]["significant"]
    noisy = compare.pick_stability(["a", "b"], [_validation_rows([0.9, 0.0, 0.5, 0.2]),
                                                _validation_rows([0.1, 0.8, 0.4, 0.2])])
    assert noisy["chosen"] == "a" and noisy["runner_up"] == "b"
    assert 0.2 < noisy["same_pick"] < 0.8 and not noisy["gap"]["significant"]


def test_seed_workers_wait_passively_unless_told_otherwise(compare: ModuleType,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert compare.worker_env(OMP_NUM_THREADS="2")["OMP_WAIT_POLICY"] == "PASSIVE"
    assert compare.worker_env(OMP_NUM_THREADS="2")["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice wins
    assert compare.worker_env()["OMP_WAIT_POLICY"] == "ACTIVE"

"""`tlcr demo --preset smoke` end to end (every stage, the service on loopback, the report folder) within CI's budget.

The run itself is the session fixture `demo_smoke_run` (tests/conftest.py), shared with the report-page
browser test. Smoke-sized models learn nothing useful, so these tests check that every file and number the
report promises is there and finite, not that the numbers are good.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest

SMOKE_BUDGET_S = 180.0  # the CI budget for the whole smoke demo
REPORT_FILES = ("report.html", "metrics.json", "fig6.png", "fig7.png", "responses.jsonl", "demo_config.json",
                "service.log")
POLICIES = ("SFT", "TLCR")  # the smoke config trains one PPO mode, "tlcr"
SUMMARY_METRICS = ("sequence_reward", "fixed_token_reward_sum", "continuous_token_reward_sum", "response_tokens",
                   "oracle_score", "oracle_helpful", "oracle_style_faults", "oracle_details", "oracle_wrong_facts")
ORACLE_PARTS = ("oracle (1 = ideal)", "helpful (all asked facts right)", "style faults / response",
                "details (share of asked)", "wrong facts / response")
FAULT_KINDS = ("rude sentence", "hedge", "repeated sentence", "wrong fact", "left-out fact", "left-out detail")
STAGE_COUNT = 8  # "1/8 tokenizer + tiny model" … "8/8 evaluation through the service"


def is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def assert_finite(values: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in values]
    assert not missing, f"{where}: missing {missing} (has {sorted(values)})"
    bad = {k: values[k] for k in keys if not is_finite_number(values[k])}
    assert not bad, f"{where}: not finite numbers: {bad}"


@pytest.fixture(scope="module")
def run_dir(demo_smoke_run: Any) -> Path:
    return Path(demo_smoke_run.run_dir)


@pytest.fixture(scope="module")
def metrics(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")))


def test_smoke_demo_fits_the_ci_budget(demo_smoke_run: Any, metrics: dict[str, Any]) -> None:
    assert demo_smoke_run.wall_seconds < SMOKE_BUDGET_S, f"smoke demo took {demo_smoke_run.wall_seconds:.0f} s"
    assert metrics["timings"]["total"] <= demo_smoke_run.wall_seconds


def test_report_files_exist_and_are_not_empty(run_dir: Path) -> None:
    for name in REPORT_FILES:
        path = run_dir / name
        assert path.is_file(), f"{path} missing; run folder has {sorted(p.name for p in run_dir.iterdir())}"
        assert path.stat().st_size > 0, f"{path} is empty"
    for part in ("sft", "rm", "ppo", "labels"):
        assert (run_dir / "data" / f"{part}.jsonl").stat().st_size > 0
    for model in ("base", "sft", "discriminator", "reward_model"):
        assert (run_dir / "models" / model / "config.json").is_file(), f"models/{model} not saved"
    assert (run_dir / "ppo" / "tlcr" / "policy" / "config.json").is_file()


@pytest.mark.parametrize("figure", ["fig6.png", "fig7.png"])
def test_figures_are_drawn(run_dir: Path, figure: str) -> None:
    image = np.asarray(matplotlib.image.imread(run_dir / figure), dtype=np.float64)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, image.shape
    assert image[..., :3].std() > 0.05, f"{figure} looks blank"


def test_summary_numbers_are_finite(metrics: dict[str, Any], run_dir: Path) -> None:
    assert set(metrics["summary"]) == set(POLICIES)
    for policy in POLICIES:
        assert_finite(metrics["summary"][policy], SUMMARY_METRICS, f"metrics.json summary[{policy}]")
        row = metrics["summary"][policy]
        # response_tokens counts the policy's generated tokens (EOS excluded), capped by max_new_tokens
        assert 0 <= row["response_tokens"] <= metrics["config"]["max_new_tokens"]
    assert metrics["n_prompts"] == 8
    assert set(metrics["policies"]) == set(POLICIES)
    assert Path(metrics["policies"]["TLCR"]) == run_dir / "ppo" / "tlcr" / "policy"


def test_stage_metrics_and_timings_are_finite(metrics: dict[str, Any]) -> None:
    timings = metrics["timings"]
    stages_timed = sorted(k for k in timings if k != "total")
    assert [k.split(" ")[0] for k in stages_timed] == [f"{i}/{STAGE_COUNT}" for i in range(1, STAGE_COUNT + 1)]
    assert_finite(timings, (*stages_timed, "total"), "metrics.json timings")
    assert all(timings[k] >= 0 for k in stages_timed) and sum(timings[k] for k in stages_timed) <= timings["total"]
    stages = metrics["stages"]
    assert stages["labeling"]["status"].get("ok", 0) > 0, stages["labeling"]
    assert {"negative", "neutral", "positive"} <= set(stages["labeling"]["labels"])
    assert_finite(stages["discriminator"]["train"], ("train_loss",), "discriminator train")
    assert_finite(stages["discriminator"]["eval"],
                  ("edited_token_accuracy", "mean_d_neutral", "ece_edited", "pairwise_accuracy"),
                  "discriminator eval")
    assert_finite(stages["reward_model"]["train"], ("train_loss",), "reward model train")
    assert_finite(stages["reward_model"]["eval"], ("pairwise_accuracy", "mean_chosen_reward", "mean_rejected_reward"),
                  "reward model eval")
    assert metrics["config"]["ppo_steps"] == 2 and metrics["config"]["modes"] == ["tlcr"]


def test_ppo_metrics_are_finite(run_dir: Path) -> None:
    lines = (run_dir / "ppo" / "tlcr" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    steps = [json.loads(line) for line in lines]
    assert [s["step"] for s in steps] == [1, 2]
    for step in steps:
        assert_finite(step, ("reward/total", "kl", "loss/policy", "loss/value", "entropy", "time/step"),
                      f"PPO step {step['step']}")


def test_responses_carry_finite_token_rewards(run_dir: Path) -> None:
    rows = [json.loads(line) for line in (run_dir / "responses.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 8 * len(POLICIES)
    assert {r["policy"] for r in rows} == set(POLICIES)
    for row in rows:
        where = f"responses.jsonl {row['policy']} {row['prompt'][:40]!r}"
        assert len(row["tokens"]) == len(row["rewards"]) > 0, where
        assert all(is_finite_number(r) and -1.0 <= r <= 1.0 for r in row["rewards"]), where
        assert math.isclose(sum(row["rewards"]), row["continuous_token_reward_sum"], rel_tol=1e-4, abs_tol=1e-4), where


def test_report_html_has_the_summary_figures_and_token_spans(run_dir: Path, metrics: dict[str, Any]) -> None:
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<table id='summary'>" in page
    for policy in POLICIES:
        assert f"<td>{policy}</td>" in page
    assert page.count("data:image/png;base64,") == 2  # Fig. 6 and Fig. 7 embedded
    rewards = [float(r) for r in re.findall(r'<span class="tok"[^>]*data-reward="([^"]+)"', page)]
    assert rewards and all(math.isfinite(r) for r in rewards)
    assert "nan" not in re.findall(r"<td>([^<]*)</td>", page)
    assert "It cannot rank methods" in page  # one seed of one method: the report says what it cannot show


def test_console_shows_every_stage_and_the_summary(demo_smoke_run: Any, run_dir: Path,
                                                   metrics: dict[str, Any]) -> None:
    text = demo_smoke_run.console_text
    for stage in (k for k in metrics["timings"] if k != "total"):
        assert f"✓ {stage}" in text, f"stage {stage!r} not reported as done"
    assert str(run_dir / "report.html") in text.replace("\n", "")
    assert "Finished server process" in (run_dir / "service.log").read_text(encoding="utf-8")  # service stopped


def test_the_report_sets_the_oracle_parts_and_one_example_per_fault_kind_side_by_side(
        run_dir: Path, metrics: dict[str, Any]) -> None:
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    summary_head = page.split("<table id='summary'>")[1].split("</tr>")[0]
    assert "_" not in summary_head, summary_head  # headers a person reads, not metrics.json keys
    assert list(metrics["changes"]) == list(ORACLE_PARTS)
    sft, tlcr = metrics["summary"]["SFT"], metrics["summary"]["TLCR"]
    assert metrics["changes"]["wrong facts / response"]["change"] == pytest.approx(
        tlcr["oracle_wrong_facts"] - sft["oracle_wrong_facts"])
    changes = page.split("<table id='changes'>")[1].split("</table>")[0]
    assert all(f"<td>{part}</td>" in changes for part in ORACLE_PARTS)
    examples = metrics["fault_examples"]
    assert [e["kind"] for e in examples] == list(FAULT_KINDS)
    responses = [json.loads(line) for line in (run_dir / "responses.jsonl").read_text(encoding="utf-8").splitlines()]
    test_prompts = {r["prompt"] for r in responses}
    shown = [e for e in examples if e["prompt"] is not None]
    assert all(e["n_responses"] == 8 for e in examples) and all(e["prompt"] in test_prompts for e in shown)
    assert all(e["baseline_count"] >= 1 and e["baseline_with_fault"] >= 1 for e in shown)
    assert page.count("<div class='pair'") == len(shown)
    assert page.count("No response had this fault.") == len(examples) - len(shown)
    assert "What this run can and cannot show" in page and "docs/results.md" in page


def test_console_sets_the_oracle_parts_side_by_side_with_readable_names(demo_smoke_run: Any) -> None:
    text = demo_smoke_run.console_text
    assert "What TLCR changed" in text
    for label in (*ORACLE_PARTS, "Σ token reward, continuous", "length (tokens)"):
        assert label in text, label
    assert "continuous_token_reward_sum" not in text and "docs/results.md" in text

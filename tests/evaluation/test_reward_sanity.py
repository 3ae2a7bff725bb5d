"""Reward sanity on the served discriminator: the plumbing against an untrained one (fast), and the ordering
Σr(ideal) > Σr(empty) = 0 > Σr(rejected) against the demo's discriminator (slow). Only continuous mode's ordering
is asserted: fixed mode's Σr(ideal) sits at ≈ 0 (docs/results.md: +0.121 / −0.027 / +0.137 over seeds 0–2; a
smaller discriminator gave −0.13 to −0.23), so the test reports it, as a warning when it fails or is marginal
over pairs (one run here, seed 0, 128 pairs: continuous +2.308 / 0 / −3.851, margin 10.1 s.e.; fixed
+0.141 / 0 / −6.359, margin 4.6 s.e. — a margin over pairs that does not cover the variation between seeds)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tlcr.core.data.controlled import ControlledTask
from tlcr.core.models import load_tokenizer
from tlcr.evaluation.reward_sanity import MARGINAL_SE, format_sanity, ordering_margin, reward_sanity, sanity_rows
from tlcr.service.client import TokenRewardClient
from tlcr.service.launcher import ServiceProcess, start_service


@pytest.fixture(scope="module")
def untrained_service(tiny_token_classifier_dir: Path) -> Iterator[ServiceProcess]:
    with start_service(tiny_token_classifier_dir, extra_args=["--torch-threads", "1"]) as proc:
        yield proc


def test_sums_and_metrics_come_from_the_served_scores(untrained_service: ServiceProcess,
                                                      tiny_token_classifier_dir: Path,
                                                      controlled_task: ControlledTask) -> None:
    with TokenRewardClient(untrained_service.url) as client:
        result = reward_sanity(client, load_tokenizer(tiny_token_classifier_dir), controlled_task, n_pairs=12)
    assert result["part"] == "validation" and result["n_pairs"] == 12
    sums = result["reward_sums"]
    assert sums["continuous"]["empty"] == sums["fixed"]["empty"] == 0.0
    assert float(sums["fixed"]["ideal"] * 12).is_integer()  # each fixed reward is −1, 0 or +1
    disc = result["discriminator"]
    assert disc["n_pairs"] == 12 and disc["n_edited_tokens"] > 0 and disc["n_neutral_tokens"] > 0
    assert result["ordering_holds"]["continuous"] == (
        sums["continuous"]["ideal"] > 0 > sums["continuous"]["rejected"])
    assert result["standard_errors"]["continuous"]["ideal"] > 0  # untrained D ≈ 0.5: fixed mode is all 0 here
    for mode, errors in result["standard_errors"].items():
        assert errors["ideal"] >= 0 and errors["rejected"] >= 0, (mode, errors)
        assert (result["ordering_margin"][mode] > 0) == result["ordering_holds"][mode], (mode, result)
    labels = [label for label, _ in sanity_rows(result)]
    assert "mean D on neutral tokens" in labels and "positive recall / precision" in labels


def test_an_ordering_within_two_standard_errors_of_failing_is_called_marginal() -> None:
    assert ordering_margin({"ideal": 0.4, "rejected": -3.0}, {"ideal": 0.1, "rejected": 0.5}) == pytest.approx(4.0)
    assert ordering_margin({"ideal": -0.03, "rejected": -5.6}, {"ideal": 0.02, "rejected": 0.3}) == pytest.approx(-1.5)
    assert ordering_margin({"ideal": 1.0, "rejected": -1.0}, {"ideal": 0.0, "rejected": 0.0}) == math.inf
    result = {"reward_sums": {"fixed": {"ideal": -0.027, "empty": 0.0, "rejected": -5.6}},
              "ordering_holds": {"fixed": False}, "ordering_margin": {"fixed": -1.4},
              "discriminator": {"edited_token_accuracy": 0.94, "mean_d_neutral": 0.52,
                                "per_class": {"positive": {"recall": 0.99, "precision": 0.9}}}}
    assert "-0.027 / +0.000 / -5.600 (does NOT hold, margin -1.4 s.e.: marginal)" in format_sanity([result])
    result["ordering_margin"]["fixed"] = -2.5
    assert "marginal" not in format_sanity([result])


@pytest.mark.slow
def test_the_demo_discriminator_ranks_ideal_above_empty_above_rejected(tmp_path: Path) -> None:
    """The demo's own stages and sizes (SFT, chosen-reviser labels, discriminator from the SFT model)."""
    from tlcr import pipeline
    from tlcr.demo import DemoConfig

    config = DemoConfig()
    data, _ = pipeline.prepare_data(config, tmp_path)
    sft = pipeline.sft_stage(config, data, tmp_path)
    labels, _ = pipeline.label_stage(data, sft, tmp_path)
    disc, _ = pipeline.discriminator_stage(config, labels, sft, tmp_path)
    with start_service(disc, extra_args=["--torch-threads", "1"]) as service, \
            TokenRewardClient(service.url) as client:
        result = reward_sanity(client, load_tokenizer(disc), pipeline.controlled_task(), n_pairs=128)
    report = format_sanity([result])
    print(report)  # with -s or -rP: both modes, fixed included
    assert result["ordering_holds"]["continuous"], report
    # Continuous mode holds by far more than 2 s.e. (docs/results.md: ideal +2.2 to +2.6, rejected −3.1 to −3.5).
    assert result["ordering_margin"]["continuous"] >= 2 * MARGINAL_SE, report
    if abs(result["ordering_margin"]["fixed"]) < MARGINAL_SE or not result["ordering_holds"]["fixed"]:
        warnings.warn(f"fixed-mode ordering (reported, not asserted): {report.splitlines()[1]}", stacklevel=1)
    assert result["reward_sums"]["fixed"]["rejected"] < 0, report  # fixed mode's rejected side is far from 0
    assert result["discriminator"]["edited_token_accuracy"] >= 0.9
    assert result["discriminator"]["per_class"]["positive"]["recall"] >= 0.6

"""Reward sanity on the served discriminator: the plumbing against an untrained one (fast), and the ordering
Σr(ideal) > Σr(empty) = 0 > Σr(rejected) against the demo's discriminator (slow; a smaller one — hidden 64,
1,500 pairs, no SFT — kept the continuous ordering but gave fixed-mode Σr(ideal) −0.13 to −0.23)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tlcr.core.data.controlled import ControlledTask
from tlcr.core.models import load_tokenizer
from tlcr.evaluation.reward_sanity import reward_sanity, sanity_rows
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
    labels = [label for label, _ in sanity_rows(result)]
    assert "mean D on neutral tokens" in labels and "positive recall / precision" in labels


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
    assert result["ordering_holds"] == {"continuous": True, "fixed": True}, result["reward_sums"]
    assert result["discriminator"]["edited_token_accuracy"] >= 0.9
    assert result["discriminator"]["per_class"]["positive"]["recall"] >= 0.6

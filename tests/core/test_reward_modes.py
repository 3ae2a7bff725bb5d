import pytest

from tlcr.core.reward_modes import PolicyRewardMode, RewardMode


def test_every_token_mode_of_a_policy_is_a_service_mode_and_seq_asks_for_sequence_scores():
    assert PolicyRewardMode.tlcr.service_mode is RewardMode.continuous
    assert PolicyRewardMode.tlcr_fixed.service_mode is RewardMode.fixed
    assert PolicyRewardMode.tlcr_positive_only.service_mode is RewardMode.positive_only
    assert PolicyRewardMode.tlcr_negative_only.service_mode is RewardMode.negative_only
    assert PolicyRewardMode.seq.service_mode is None


def test_report_labels_are_the_papers_rows_and_distinct():
    labels = [m.label for m in PolicyRewardMode]
    assert len(set(labels)) == len(labels)
    assert PolicyRewardMode("seq").label == "PPO_seq" and PolicyRewardMode("tlcr").label == "TLCR"


def test_an_unknown_mode_is_refused_naming_it_and_the_choices():
    with pytest.raises(ValueError, match=r"unknown reward mode 'tclr'; choose from tlcr, tlcr_fixed, seq"):
        PolicyRewardMode.parse("tclr")

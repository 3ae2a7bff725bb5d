"""trainer.discriminator_metrics against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tlcr.trainer.discriminator_metrics import (
    discriminator_metrics,
    edited_token_accuracy,
    expected_calibration_error,
    mean_neutral_probability,
    pairwise_preference_accuracy,
    precision_recall,
    reward_sum,
)

# Six tokens: two positive, two negative, two neutral.
PROBS = np.array([0.9, 0.4, 0.2, 0.6, 0.5, 0.7])
LABELS = np.array([1.0, 1.0, 0.0, 0.0, 0.5, 0.5])


def test_edited_token_accuracy() -> None:
    # edited: 0.9→pos ✓, 0.4→neg ✗ (label pos), 0.2→neg ✓, 0.6→pos ✗ (label neg) → 2/4
    assert edited_token_accuracy(PROBS, LABELS) == pytest.approx(0.5)
    assert edited_token_accuracy(PROBS, LABELS, threshold=0.3) == pytest.approx(0.75)  # 0.4→pos ✓, 0.2 ✓, 0.6 ✗, 0.9 ✓
    assert edited_token_accuracy(np.array([0.5]), np.array([1.0])) == 1.0  # D = threshold counts as positive
    assert edited_token_accuracy(np.array([0.3]), np.array([0.5])) is None


def test_precision_recall_per_class() -> None:
    got = precision_recall(PROBS, LABELS)
    # predicted positive: 0.9 (pos), 0.6 (neg) → precision 1/2; actual positive 2, hit 1 → recall 1/2
    assert got["positive"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    # predicted negative: 0.4 (pos), 0.2 (neg) → precision 1/2; recall 1/2
    assert got["negative"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    only_negatives = precision_recall(np.array([0.1, 0.2]), np.array([0.0, 0.0]))
    assert only_negatives["positive"] == {"precision": None, "recall": None, "support": 0}
    assert only_negatives["negative"]["recall"] == 1.0


def test_mean_neutral_probability() -> None:
    assert mean_neutral_probability(PROBS, LABELS) == pytest.approx(0.6)
    assert mean_neutral_probability(np.array([0.1]), np.array([0.0])) is None


def test_expected_calibration_error_by_hand() -> None:
    probs = np.array([0.05, 0.15, 0.95, 0.85, 1.0])
    targets = np.array([0.0, 1.0, 1.0, 1.0, 1.0])
    # bins (10): [0,.1): {0.05→0} |0.05-0| ; [.1,.2): {0.15→1} |0.15-1| = 0.85 ;
    # [.8,.9): {0.85→1} 0.15 ; [.9,1]: {0.95, 1.0 → 1, 1} |0.975-1| = 0.025 (weight 2/5)
    expected = (0.05 + 0.85 + 0.15) / 5 + 2 / 5 * 0.025
    assert expected_calibration_error(probs, targets) == pytest.approx(expected)
    assert expected_calibration_error(np.array([0.3, 0.3]), np.array([0.0, 1.0]), n_bins=1) == pytest.approx(0.2)
    assert expected_calibration_error(np.array([]), np.array([])) is None


def test_pairwise_preference_accuracy_counts_ties_half() -> None:
    assert pairwise_preference_accuracy([3.0, 1.0, 2.0, 0.0], [1.0, 2.0, 2.0, -1.0]) == pytest.approx(2.5 / 4)
    assert pairwise_preference_accuracy([], []) is None
    with pytest.raises(ValueError, match="chosen"):
        pairwise_preference_accuracy([1.0], [])


def test_reward_sum_is_sum_of_2d_minus_1() -> None:
    assert reward_sum([1.0, 0.5, 0.25]) == pytest.approx(1.0 + 0.0 - 0.5)


def test_discriminator_metrics_aggregates_ragged_sequences_and_is_json() -> None:
    probs = [[0.9, 0.4, 0.5], [0.2, 0.6, 0.7]]
    labels = [[1.0, 1.0, 0.5], [0.0, 0.0, 0.5]]
    got = discriminator_metrics(probs, labels, chosen_reward_sums=[1.0], rejected_reward_sums=[-1.0])
    assert got["edited_token_accuracy"] == pytest.approx(0.5)
    assert got["mean_d_neutral"] == pytest.approx(0.6)
    assert got["pairwise_accuracy"] == 1.0
    assert (got["n_tokens"], got["n_edited_tokens"], got["n_neutral_tokens"], got["n_pairs"]) == (6, 4, 2, 1)
    # edited tokens: 0.9→1, 0.4→1, 0.2→0, 0.6→0; bins 9, 4, 2, 6 each hold one token
    assert got["ece_edited"] == pytest.approx((0.1 + 0.6 + 0.2 + 0.6) / 4)
    json.dumps(got)
    with pytest.raises(ValueError, match="sequence 1: 2 probabilities but 3 labels"):
        discriminator_metrics([[0.1], [0.2, 0.3]], [[0.0], [0.0, 0.5, 0.5]])

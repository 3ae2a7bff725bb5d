"""Reward modes and reductions against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from tlcr.core.reward_modes import RewardMode
from tlcr.service.rewards import reduce_rewards, rewards_from_probabilities

P = [0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0]


@pytest.mark.parametrize(("mode", "threshold", "expected"), [
    ("continuous", 0.6, [-1.0, -0.5, -0.2, 0.0, 0.2, 0.5, 1.0]),
    ("fixed", 0.6, [-1.0, -1.0, -1.0, 0.0, 1.0, 1.0, 1.0]),  # p <= 0.4 → -1, p >= 0.6 → +1 (inclusive)
    ("fixed", 0.8, [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
    ("fixed", 1.0, [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
    ("positive_only", 0.6, [0.0, 0.0, 0.0, 0.0, 0.2, 0.5, 1.0]),
    ("negative_only", 0.6, [-1.0, -0.5, -0.2, 0.0, 0.0, 0.0, 0.0]),
    ("probability", 0.6, P),
])
def test_modes_match_hand_computed_values(mode: str, threshold: float, expected: list[float]) -> None:
    assert rewards_from_probabilities(P, mode, threshold).tolist() == pytest.approx(expected, abs=1e-12)
    assert rewards_from_probabilities(np.array(P), RewardMode(mode), threshold).dtype == np.float64


def test_fixed_mode_boundaries_are_inclusive_on_both_sides() -> None:
    assert rewards_from_probabilities([0.2, 0.8, 0.21, 0.79], "fixed", 0.8).tolist() == [-1.0, 1.0, 0.0, 0.0]


def test_empty_input_gives_empty_rewards() -> None:
    assert rewards_from_probabilities([], "continuous").tolist() == []


@pytest.mark.parametrize("bad", [[1.5], [-0.1], [float("nan")]])
def test_probabilities_outside_unit_interval_are_refused(bad: list[float]) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rewards_from_probabilities(bad, "continuous")


def test_bad_threshold_and_mode_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        rewards_from_probabilities([0.5], "fixed", threshold=0.5)
    with pytest.raises(ValueError):
        rewards_from_probabilities([0.5], "sigmoid")


def test_reductions() -> None:
    assert reduce_rewards([0.5, -0.25, 1.0], "sum") == pytest.approx(1.25)
    assert reduce_rewards([0.5, -0.25, 1.0], "mean") == pytest.approx(1.25 / 3)
    assert reduce_rewards([], "mean") == 0.0
    with pytest.raises(ValueError, match="reduction"):
        reduce_rewards([1.0], "max")

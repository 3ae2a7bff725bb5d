"""Pure functions turning discriminator probabilities p = P(token is positive) into token rewards.

TLCR (Yoon et al., 2024) uses r = 2p - 1; the other modes are the paper's fixed-reward variant and
its two ablations, plus the raw probability.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tlcr.core.reward_modes import RewardMode

DEFAULT_THRESHOLD = 0.6


def continuous_rewards(probabilities: np.ndarray) -> np.ndarray:
    """r = 2p - 1, in [-1, 1]; p = 0.5 (neutral) gives 0."""
    return 2.0 * probabilities - 1.0


def fixed_rewards(probabilities: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """+1 if p >= tau, -1 if p <= 1 - tau, else 0 (TLCR_fixed)."""
    if not 0.5 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0.5, 1], got {threshold}")
    rewards = np.zeros_like(probabilities)
    rewards[probabilities >= threshold] = 1.0
    # 1 - p >= tau rather than p <= 1 - tau: the same in exact arithmetic, but symmetric in floats
    # (1 - 0.8 is 0.19999999999999996, which would miss p = 0.2).
    rewards[1.0 - probabilities >= threshold] = -1.0
    return rewards


def rewards_from_probabilities(probabilities: Sequence[float] | np.ndarray, mode: RewardMode | str,
                               threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Token rewards for one response, as float64, in the given mode."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size and not ((p >= 0.0) & (p <= 1.0)).all():  # also catches NaN
        raise ValueError("probabilities must lie in [0, 1]")
    mode = RewardMode(mode)
    if mode is RewardMode.continuous:
        return continuous_rewards(p)
    if mode is RewardMode.fixed:
        return fixed_rewards(p, threshold)
    if mode is RewardMode.positive_only:
        return np.maximum(continuous_rewards(p), 0.0)
    if mode is RewardMode.negative_only:
        return np.minimum(continuous_rewards(p), 0.0)
    return p.copy()  # RewardMode.probability


def reduce_rewards(rewards: Sequence[float] | np.ndarray, reduction: str) -> float:
    """One scalar per response (OpenRLHF's /get_reward): the sum or the mean of token rewards."""
    r = np.asarray(rewards, dtype=np.float64)
    if reduction == "sum":
        return float(r.sum())
    if reduction == "mean":
        return float(r.mean()) if r.size else 0.0
    raise ValueError(f"unknown reduction {reduction!r}; expected 'sum' or 'mean'")

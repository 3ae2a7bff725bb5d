"""Paired bootstrap confidence intervals over prompts and seeds.

A comparison of two methods gives one difference per (seed, prompt) — the same held-out prompts are
answered by both methods' policies of the same seed. Each resample draws seeds with replacement and
prompts with replacement (the same prompts for every drawn seed, since the prompt set is shared) and
averages the differences; the 2.5 and 97.5 percentiles of those means are the 95 % interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n_seeds: int
    n_prompts: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float | int | bool]:
        return {**asdict(self), "significant": self.significant}


def paired_bootstrap(differences: np.ndarray, *, n_resamples: int = 4000, confidence: float = 0.95,
                     seed: int = 0) -> Interval:
    """Mean of a [seeds, prompts] array of paired differences and its bootstrap interval."""
    diffs = np.asarray(differences, dtype=float)
    if diffs.ndim != 2 or diffs.size == 0:
        raise ValueError(f"differences must be a non-empty [seeds, prompts] array, got shape {diffs.shape}")
    if not np.isfinite(diffs).all():
        raise ValueError("differences contain NaN or inf")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n_seeds, n_prompts = diffs.shape
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    prompt_draws = rng.integers(0, n_prompts, size=(n_resamples, n_prompts))
    # means[b] = mean over drawn seeds s and drawn prompts p of diffs[s, p]
    per_seed_prompt_means = diffs[:, prompt_draws].mean(axis=2)  # [seeds, resamples]
    means = np.take_along_axis(per_seed_prompt_means.T, seed_draws, axis=1).mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(diffs.mean()), float(low), float(high), n_seeds, n_prompts)

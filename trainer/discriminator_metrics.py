"""Quality metrics of a token discriminator: pure functions over probabilities and soft labels.

Labels follow the labelled-record schema: 0 = negative (edited in the rejected response), 1 = positive
(edited in the revision), 0.5 = neutral (unchanged). "Edited tokens" are those labelled 0 or 1. A token
is predicted positive when D >= threshold (0.5 by default, as in the paper's 81.4 % accuracy).
A metric with nothing to average over (no positive tokens, say) is None, which JSON writes as null.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NEGATIVE = 0.0
NEUTRAL = 0.5
POSITIVE = 1.0


def _flatten(probs: Sequence[Sequence[float]] | np.ndarray,
             labels: Sequence[Sequence[float]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate per-sequence lists (ragged allowed) into two flat float arrays of equal length."""
    if isinstance(probs, np.ndarray) and probs.ndim == 1:
        flat_p, flat_l = probs.astype(float), np.asarray(labels, dtype=float)
    else:
        p_rows, l_rows = list(probs), list(labels)
        if len(p_rows) != len(l_rows):
            raise ValueError(f"{len(p_rows)} probability sequences but {len(l_rows)} label sequences")
        for i, (p, lab) in enumerate(zip(p_rows, l_rows, strict=True)):
            if len(p) != len(lab):
                raise ValueError(f"sequence {i}: {len(p)} probabilities but {len(lab)} labels")
        flat_p = np.asarray([x for row in p_rows for x in row], dtype=float)
        flat_l = np.asarray([x for row in l_rows for x in row], dtype=float)
    if flat_p.shape != flat_l.shape:
        raise ValueError(f"{flat_p.size} probabilities but {flat_l.size} labels")
    return flat_p, flat_l


def edited_mask(labels: np.ndarray) -> np.ndarray:
    return (labels == NEGATIVE) | (labels == POSITIVE)


def edited_token_accuracy(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float | None:
    """Share of edited tokens whose predicted class (D >= threshold → positive) matches the label."""
    mask = edited_mask(labels)
    if not mask.any():
        return None
    predicted_positive = probs[mask] >= threshold
    return float(np.mean(predicted_positive == (labels[mask] == POSITIVE)))


ClassStats = dict[str, float | int | None]


def precision_recall(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, ClassStats]:
    """Precision, recall and support of the positive and the negative class, over edited tokens."""
    mask = edited_mask(labels)
    predicted_positive = probs[mask] >= threshold
    actual_positive = labels[mask] == POSITIVE
    out: dict[str, ClassStats] = {}
    for name, predicted, actual in (("positive", predicted_positive, actual_positive),
                                    ("negative", ~predicted_positive, ~actual_positive)):
        true_hits = int(np.sum(predicted & actual))
        n_predicted, n_actual = int(np.sum(predicted)), int(np.sum(actual))
        out[name] = {"precision": true_hits / n_predicted if n_predicted else None,
                     "recall": true_hits / n_actual if n_actual else None,
                     "support": n_actual}
    return out


def mean_neutral_probability(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean D over neutral tokens (ideally near 0.5, i.e. reward near 0)."""
    mask = labels == NEUTRAL
    return float(np.mean(probs[mask])) if mask.any() else None


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = 10) -> float | None:
    """ECE of binary predictions: Σ_bins (n_bin / n) · |mean D in bin − share of positives in bin|.

    Equal-width bins over [0, 1]; the last bin includes 1.0. `targets` are 0/1.
    """
    if probs.size == 0:
        return None
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    bins = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    error = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            error += in_bin.sum() / probs.size * abs(probs[in_bin].mean() - targets[in_bin].mean())
    return float(error)


def pairwise_preference_accuracy(chosen_scores: Sequence[float], rejected_scores: Sequence[float]) -> float | None:
    """Share of pairs whose chosen response outscores the rejected one; a tie counts half."""
    chosen, rejected = np.asarray(chosen_scores, dtype=float), np.asarray(rejected_scores, dtype=float)
    if chosen.shape != rejected.shape:
        raise ValueError(f"{chosen.size} chosen scores but {rejected.size} rejected scores")
    if chosen.size == 0:
        return None
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))


def reward_sum(probs: Sequence[float]) -> float:
    """Sum over a response of the TLCR token reward r_t = 2·D_t − 1."""
    return float(np.sum(2.0 * np.asarray(probs, dtype=float) - 1.0))


def discriminator_metrics(probs: Sequence[Sequence[float]], labels: Sequence[Sequence[float]], *,
                          chosen_reward_sums: Sequence[float] = (), rejected_reward_sums: Sequence[float] = (),
                          threshold: float = 0.5, n_bins: int = 10) -> dict[str, object]:
    """All discriminator metrics in one JSON-ready dict.

    `probs`/`labels`: per-sequence D and labels of held-out sequences (rejected and revised);
    `*_reward_sums`: Σ r_t of held-out chosen and rejected responses, for pairwise accuracy.
    """
    flat_p, flat_l = _flatten(probs, labels)
    mask = edited_mask(flat_l)
    return {
        "edited_token_accuracy": edited_token_accuracy(flat_p, flat_l, threshold),
        "per_class": precision_recall(flat_p, flat_l, threshold),
        "mean_d_neutral": mean_neutral_probability(flat_p, flat_l),
        "ece_edited": expected_calibration_error(flat_p[mask], flat_l[mask], n_bins),
        "pairwise_accuracy": pairwise_preference_accuracy(chosen_reward_sums, rejected_reward_sums),
        "n_tokens": int(flat_l.size),
        "n_edited_tokens": int(mask.sum()),
        "n_neutral_tokens": int(np.sum(flat_l == NEUTRAL)),
        "n_pairs": len(chosen_reward_sums),
        "threshold": threshold,
    }

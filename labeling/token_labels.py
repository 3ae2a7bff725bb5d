"""Token labels from a Levenshtein diff over token ids (the TLCR labelling rule).

Rejected tokens deleted or substituted by the revision are negative (0); revised tokens added or
substituted are positive (1); every other token is neutral (0.5).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import Levenshtein

NEGATIVE = 0.0
NEUTRAL = 0.5
POSITIVE = 1.0


@dataclass(frozen=True)
class TokenLabels:
    rejected_labels: list[float]
    revised_labels: list[float]
    inserts: int
    deletes: int
    replaces: int

    @property
    def edit_distance(self) -> int:
        return self.inserts + self.deletes + self.replaces


def label_tokens(rejected_ids: list[int], revised_ids: list[int]) -> TokenLabels:
    """Labels for both sequences from `Levenshtein.editops` over their token-id lists."""
    rejected_labels = [NEUTRAL] * len(rejected_ids)
    revised_labels = [NEUTRAL] * len(revised_ids)
    counts: Counter[str] = Counter()
    for op, src, dst in Levenshtein.editops(rejected_ids, revised_ids):
        counts[op] += 1
        if op in ("delete", "replace"):
            rejected_labels[src] = NEGATIVE
        if op in ("insert", "replace"):
            revised_labels[dst] = POSITIVE
    return TokenLabels(rejected_labels, revised_labels, counts["insert"], counts["delete"], counts["replace"])

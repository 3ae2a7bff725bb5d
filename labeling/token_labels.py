"""Token labels from a Levenshtein diff over token ids (the TLCR labelling rule).

Rejected tokens deleted or substituted by the revision are negative (0); revised tokens added or
substituted are positive (1); every other token is neutral (0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import Levenshtein  # python-Levenshtein; its C engine is rapidfuzz's

from tlcr.core.data.labelled import NEGATIVE, NEUTRAL, POSITIVE

__all__ = ["NEGATIVE", "NEUTRAL", "POSITIVE", "TokenLabels", "label_tokens"]


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
    """Labels for both sequences from the Levenshtein edit operations over their token-id lists.

    The opcodes are the block form of `Levenshtein.editops` (same alignment, consecutive operations
    grouped), so the labels are set with a few slice assignments instead of one Python step per edited
    token. python-Levenshtein's `opcodes` runs on rapidfuzz's C engine; benchmarks/labeling.py times it
    against calling rapidfuzz directly on the same ids (docs/labeling.md).
    """
    rejected_labels = [NEUTRAL] * len(rejected_ids)
    revised_labels = [NEUTRAL] * len(revised_ids)
    inserts = deletes = replaces = 0
    for tag, src_start, src_end, dst_start, dst_end in Levenshtein.opcodes(rejected_ids, revised_ids):
        if tag == "equal":
            continue
        if tag != "insert":  # delete or replace: these rejected tokens are negative
            rejected_labels[src_start:src_end] = [NEGATIVE] * (src_end - src_start)
        if tag != "delete":  # insert or replace: these revised tokens are positive
            revised_labels[dst_start:dst_end] = [POSITIVE] * (dst_end - dst_start)
        if tag == "replace":  # a replace block pairs tokens one to one
            replaces += src_end - src_start
        elif tag == "delete":
            deletes += src_end - src_start
        else:
            inserts += dst_end - dst_start
    return TokenLabels(rejected_labels, revised_labels, inserts, deletes, replaces)

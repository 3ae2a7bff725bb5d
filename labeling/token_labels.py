"""Token labels from a Levenshtein diff over token ids (the TLCR labelling rule).

Rejected tokens deleted or substituted by the revision are negative (0); revised tokens added or
substituted are positive (1); every other token is neutral (0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

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
    """Labels for both sequences from the Levenshtein edit operations over their token-id lists.

    The opcodes are the block form of `Levenshtein.editops` (same alignment, consecutive operations
    grouped), so the labels are set with a few slice assignments instead of one Python step per edited
    token; rapidfuzz (the engine of the `Levenshtein` package) is called directly to skip the wrapper.
    On the 2,312 HH-RLHF harmless-base test pairs this is about as fast as a loop over
    `Levenshtein.editops` (1.06x in one run of benchmarks/labeling.py) and 271x faster than the TLCR
    release's pure-Python DP.
    """
    rejected_labels = [NEUTRAL] * len(rejected_ids)
    revised_labels = [NEUTRAL] * len(revised_ids)
    inserts = deletes = replaces = 0
    for tag, src_start, src_end, dst_start, dst_end in Levenshtein.opcodes(rejected_ids, revised_ids).as_list():
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

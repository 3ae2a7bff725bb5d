"""Token labels from the Levenshtein diff, on hand-made cases with hand-computed labels."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerBase

from tlcr.labeling.token_labels import label_tokens


@pytest.mark.parametrize(
    ("rejected", "revised", "rejected_labels", "revised_labels", "ops"),
    [
        # pure insertion: 9 added between 1 and 2
        ([1, 2, 3], [1, 9, 2, 3], [0.5, 0.5, 0.5], [0.5, 1.0, 0.5, 0.5], (1, 0, 0)),
        # pure deletion: 2 removed
        ([1, 2, 3, 4], [1, 3, 4], [0.5, 0.0, 0.5, 0.5], [0.5, 0.5, 0.5], (0, 1, 0)),
        # substitution: 2 -> 7
        ([1, 2, 3], [1, 7, 3], [0.5, 0.0, 0.5], [0.5, 1.0, 0.5], (0, 0, 1)),
        # deletion at both ends and a substitution in the middle
        ([5, 1, 2, 3, 6], [1, 8, 3], [0.0, 0.5, 0.0, 0.5, 0.0], [0.5, 1.0, 0.5], (0, 2, 1)),
        # empty rejected side: everything inserted
        ([], [4, 5], [], [1.0, 1.0], (2, 0, 0)),
        # empty revised side: everything deleted
        ([4, 5], [], [0.0, 0.0], [], (0, 2, 0)),
        # both empty
        ([], [], [], [], (0, 0, 0)),
        # identical
        ([3, 3, 3], [3, 3, 3], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], (0, 0, 0)),
    ],
)
def test_hand_made_cases(rejected: list[int], revised: list[int], rejected_labels: list[float],
                         revised_labels: list[float], ops: tuple[int, int, int]) -> None:
    labels = label_tokens(rejected, revised)
    assert labels.rejected_labels == rejected_labels
    assert labels.revised_labels == revised_labels
    assert (labels.inserts, labels.deletes, labels.replaces) == ops
    assert labels.edit_distance == sum(ops)


def test_unicode_deletion_labels_exactly_the_emoji_bytes(label_tokenizer: PreTrainedTokenizerBase) -> None:
    rejected_text, revised_text = " Le café est très bon 😀!", " Le café est très bon!"
    rejected = label_tokenizer(rejected_text, add_special_tokens=False)["input_ids"]
    revised = label_tokenizer(revised_text, add_special_tokens=False)["input_ids"]
    labels = label_tokens(rejected, revised)
    negative = [t for t, lab in zip(rejected, labels.rejected_labels, strict=True) if lab == 0.0]
    # Byte-level BPE splits the emoji into several tokens; all of them (and only them) are negative.
    assert label_tokenizer.decode(negative) == " 😀"
    assert labels.revised_labels == [0.5] * len(revised)
    assert labels.deletes == len(negative) and labels.inserts == labels.replaces == 0


def test_unicode_substitution_marks_both_sides(label_tokenizer: PreTrainedTokenizerBase) -> None:
    rejected = label_tokenizer(" Ein naïver Schüler.", add_special_tokens=False)["input_ids"]
    revised = label_tokenizer(" Ein kluger Schüler.", add_special_tokens=False)["input_ids"]
    labels = label_tokens(rejected, revised)
    negative = [t for t, lab in zip(rejected, labels.rejected_labels, strict=True) if lab == 0.0]
    positive = [t for t, lab in zip(revised, labels.revised_labels, strict=True) if lab == 1.0]
    # The changed word is labelled on both sides; the shared (multi-byte) "Schüler." stays neutral.
    assert label_tokenizer.decode(negative) == " naïver"
    assert label_tokenizer.decode(positive) == " kluger"
    assert len(negative) == labels.deletes + labels.replaces
    assert len(positive) == labels.inserts + labels.replaces


def test_labels_agree_with_editops_one_operation_at_a_time() -> None:
    """The block-wise labelling equals the definition applied to each `Levenshtein.editops` operation."""
    import random

    import Levenshtein

    rng = random.Random(0)
    for _ in range(300):
        rejected = [rng.randrange(12) for _ in range(rng.randrange(0, 30))]
        revised = [rng.randrange(12) for _ in range(rng.randrange(0, 30))]
        expected_rejected, expected_revised = [0.5] * len(rejected), [0.5] * len(revised)
        counts = {"insert": 0, "delete": 0, "replace": 0}
        for op, src, dst in Levenshtein.editops(rejected, revised):
            counts[op] += 1
            if op in ("delete", "replace"):
                expected_rejected[src] = 0.0
            if op in ("insert", "replace"):
                expected_revised[dst] = 1.0
        labels = label_tokens(rejected, revised)
        assert labels.rejected_labels == expected_rejected and labels.revised_labels == expected_revised
        assert (labels.inserts, labels.deletes, labels.replaces) == (counts["insert"], counts["delete"],
                                                                     counts["replace"])
        assert labels.edit_distance == Levenshtein.distance(rejected, revised)

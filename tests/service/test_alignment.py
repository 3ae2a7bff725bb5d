"""Re-alignment of token rewards to another tokenization by character overlap, preserving the sum."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pytest

from tlcr.core.models import load_tokenizer
from tlcr.service.alignment import SpanAlignment, realign_mean, realign_sum
from tlcr.service.items import response_offsets


def test_split_by_overlap_hand_computed() -> None:
    # source 0 = "abcd" half in each target; source 1 = "efgh" inside target 1
    assert realign_sum([1.0, 2.0], [(0, 4), (4, 8)], [(0, 2), (2, 8)]).tolist() == pytest.approx([0.5, 2.5])
    # one target covering both sources sums them
    assert realign_sum([1.0, 2.0], [(0, 4), (4, 8)], [(0, 8)]).tolist() == pytest.approx([3.0])
    # thirds: a 3-character source over three 1-character targets
    assert realign_sum([0.9], [(0, 3)], [(0, 1), (1, 2), (2, 3)]).tolist() == pytest.approx([0.3, 0.3, 0.3])


def test_source_without_overlap_goes_to_nearest_target() -> None:
    # The caller dropped the space at [3, 4): its reward goes to the nearest token (a tie: the first).
    assert realign_sum([1.0, 1.0, 1.0], [(0, 3), (3, 4), (4, 9)], [(0, 3), (4, 9)]).tolist() == [2.0, 1.0]
    # an empty source span (e.g. a special token) counts too
    assert realign_sum([0.5], [(7, 7)], [(0, 3), (5, 9)]).tolist() == [0.0, 0.5]


def test_empty_target_spans_get_nothing_unless_nearest_to_an_orphan() -> None:
    assert realign_sum([3.0], [(0, 5)], [(0, 0), (0, 5)]).tolist() == [0.0, 3.0]
    assert realign_sum([3.0], [(0, 5)], [(5, 5)]).tolist() == [3.0]  # the only target


def test_mean_weights_by_share_hand_computed() -> None:
    # target 0 gets half of source 0 (p=0.2); target 1 the other half of source 0 and all of source 1 (p=0.8)
    assert realign_mean([0.2, 0.8], [(0, 4), (4, 8)], [(0, 2), (2, 8)]).tolist() == pytest.approx(
        [0.2, (0.5 * 0.2 + 1.0 * 0.8) / 1.5])
    assert realign_mean([0.9], [(0, 3)], [(0, 3), (3, 3)]).tolist() == pytest.approx([0.9, 0.5])  # 0.5: no data


def test_identity_when_tokenizations_agree() -> None:
    spans = [(0, 2), (2, 5), (5, 6)]
    values = [0.1, -0.7, 0.3]
    assert realign_sum(values, spans, spans).tolist() == pytest.approx(values)
    assert realign_mean(values, spans, spans).tolist() == pytest.approx(values)


def test_sum_is_preserved_for_random_tokenizations() -> None:
    rng = random.Random(0)

    def random_spans(length: int, n_cuts: int, drop: float) -> list[tuple[int, int]]:
        cuts = sorted({0, length, *(rng.randint(0, length) for _ in range(n_cuts))})
        spans = list(itertools.pairwise(cuts))
        kept = [s for s in spans if rng.random() >= drop]  # gaps: characters nobody covers
        return kept or spans[:1]

    for _ in range(200):
        length = rng.randint(1, 60)
        source = random_spans(length, rng.randint(0, 20), 0.0)
        target = random_spans(length, rng.randint(0, 20), 0.3)
        values = [rng.uniform(-1, 1) for _ in source]
        assert sum(realign_sum(values, source, target)) == pytest.approx(sum(values), abs=1e-9)


def test_bad_spans_are_refused() -> None:
    with pytest.raises(ValueError, match="no target spans"):
        realign_sum([1.0], [(0, 1)], [])
    with pytest.raises(ValueError, match=r"target span 0 = \[3, 1\)"):
        realign_sum([1.0], [(0, 1)], [(3, 1)])
    with pytest.raises(ValueError, match="2 values for 1 source spans"):
        SpanAlignment([(0, 1)], [(0, 1)]).sum([1.0, 2.0])


def test_realignment_between_two_real_tokenizers(tiny_model_dir: Path, tiny_gpt2_dir: Path) -> None:
    """Discriminator (tiny Llama BPE, 512) → policy (tiny GPT-2 BPE, 300): different tokens, same total."""
    response = " The capital of Pioumpioland is Firtal. Maybe, I do not know! Ünïcödé too."
    disc_ids, disc_spans = response_offsets(load_tokenizer(tiny_model_dir), response)
    policy_ids, policy_spans = response_offsets(load_tokenizer(tiny_gpt2_dir), response)
    assert disc_spans != policy_spans  # the test is only meaningful if the tokenizations differ
    values = [((i * 37) % 11 - 5) / 5 for i in range(len(disc_ids))]
    moved = realign_sum(values, disc_spans, policy_spans)
    assert len(moved) == len(policy_ids)
    assert moved.sum() == pytest.approx(sum(values), abs=1e-9)
    back = realign_sum(moved, policy_spans, disc_spans)
    assert back.sum() == pytest.approx(sum(values), abs=1e-9)


def _reference(values: list[float], source: list[tuple[int, int]], target: list[tuple[int, int]],
               empty_value: float = 0.5) -> tuple[list[float], list[float]]:
    """The definition, computed over every (source, target) pair: shares by character overlap, an
    orphan source whole to the nearest target (distance, then non-empty, then lowest index)."""
    summed, weighted, weights = [0.0] * len(target), [0.0] * len(target), [0.0] * len(target)
    for value, (a, b) in zip(values, source, strict=True):
        overlaps = [max(0, min(b, e) - max(a, s)) for s, e in target]
        total = sum(overlaps)
        if total == 0:
            nearest = min(range(len(target)), key=lambda t: (
                max(0, target[t][0] - b, a - target[t][1]), target[t][0] == target[t][1], t))
            shares = {nearest: 1.0}
        else:
            shares = {t: chars / total for t, chars in enumerate(overlaps) if chars}
        for t, share in shares.items():
            summed[t] += value * share
            weighted[t] += value * share
            weights[t] += share
    return summed, [w / n if n > 0 else empty_value for w, n in zip(weighted, weights, strict=True)]


def test_matches_the_pairwise_definition_on_hostile_spans() -> None:
    """Overlapping, nested, empty, duplicated and uncovered spans on both sides, against the O(S×T) definition."""
    rng = random.Random(1)
    for _ in range(500):
        length = rng.randint(0, 40)

        def spans(n: int, length: int = length) -> list[tuple[int, int]]:
            out = []
            for _ in range(n):
                a = rng.randint(0, length)
                out.append((a, a if rng.random() < 0.2 else rng.randint(a, length)))
            return out

        source, target = spans(rng.randint(1, 12)), spans(rng.randint(1, 12))
        values = [rng.uniform(-1, 1) for _ in source]
        expected_sum, expected_mean = _reference(values, source, target)
        alignment = SpanAlignment(source, target)
        assert alignment.sum(values).tolist() == pytest.approx(expected_sum, abs=1e-9), (source, target)
        assert alignment.mean(values).tolist() == pytest.approx(expected_mean, abs=1e-9), (source, target)


def test_many_overlapping_offsets_stay_linear_in_memory() -> None:
    # 20,000 caller spans each covering the whole 140,000-character text (the overlap matrix would hold
    # 20,000 × 35,000 entries): the alignment stores O(S + T) numbers.
    source = [(i * 4, i * 4 + 4) for i in range(35_000)]
    target = [(0, 140_000)] * 20_000
    alignment = SpanAlignment(source, target)
    moved = alignment.sum([1.0] * len(source))
    assert moved.sum() == pytest.approx(35_000.0)
    assert moved[0] == pytest.approx(35_000.0 / 20_000)
    held = sum(v.nbytes for v in vars(alignment).values() if isinstance(v, np.ndarray))
    assert held < 64 * (len(source) + len(target)) * 8

"""Pure re-alignment of per-token values from one tokenization of a text to another.

The discriminator scores its own tokens; a policy with a different tokenizer sends its response
tokens as [start, end) character spans. Each discriminator token's reward is split among the caller's
tokens in proportion to their character overlap, so the sum over the response is preserved exactly
(up to float rounding). A discriminator token overlapping no caller token (say, whitespace the caller
dropped) gives its reward to the nearest caller token, so nothing is lost.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

Span = tuple[int, int]


def _overlap(a: Span, b: Span) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def _distance(a: Span, b: Span) -> int:
    """Characters between two spans (0 when they touch or overlap)."""
    return max(0, b[0] - a[1], a[0] - b[1])


class _SpanIndex:
    """Target spans sorted by start, with a running max of ends, to find overlaps without an S×T scan."""

    def __init__(self, spans: Sequence[Span]) -> None:
        self.spans = spans
        self.order = sorted(range(len(spans)), key=lambda i: spans[i][0])
        self.starts = [spans[i][0] for i in self.order]
        self.max_end: list[int] = []
        running = -1
        for i in self.order:
            running = max(running, spans[i][1])
            self.max_end.append(running)

    def overlapping(self, span: Span) -> list[tuple[int, int]]:
        """(target index, overlap in characters) for every target overlapping `span`."""
        found = []
        j = bisect.bisect_left(self.starts, span[1]) - 1  # targets starting before span ends
        while j >= 0 and self.max_end[j] > span[0]:
            target = self.order[j]
            chars = _overlap(span, self.spans[target])
            if chars > 0:
                found.append((target, chars))
            j -= 1
        return found

    def nearest(self, span: Span) -> int:
        # Rare fallback (no overlap at all), so a linear scan is fine. Ties prefer non-empty spans.
        return min(range(len(self.spans)),
                   key=lambda t: (_distance(span, self.spans[t]), self.spans[t][0] == self.spans[t][1], t))


def share_matrix_entries(source_spans: Sequence[Span], target_spans: Sequence[Span]) -> list[list[tuple[int, float]]]:
    """For each source span, [(target index, share)] with shares summing to 1.

    Shares are proportional to character overlap; a source overlapping no target (including an empty
    source span) goes whole to the nearest target.
    """
    if not target_spans:
        raise ValueError("there are no target spans to align to")
    for name, spans in (("source", source_spans), ("target", target_spans)):
        for i, (start, end) in enumerate(spans):
            if start < 0 or end < start:
                raise ValueError(f"{name} span {i} = [{start}, {end}) is not a valid character span")
    index = _SpanIndex(target_spans)
    entries: list[list[tuple[int, float]]] = []
    for span in source_spans:
        overlaps = index.overlapping(span)
        total = sum(chars for _, chars in overlaps)
        if total == 0:
            entries.append([(index.nearest(span), 1.0)])
        else:
            entries.append([(target, chars / total) for target, chars in overlaps])
    return entries


class SpanAlignment:
    """How source tokens' values are shared out to target tokens (computed once, applied to many values)."""

    def __init__(self, source_spans: Sequence[Span], target_spans: Sequence[Span]) -> None:
        self.num_sources = len(source_spans)
        self.num_targets = len(target_spans)
        self.shares = share_matrix_entries(source_spans, target_spans)

    def _check(self, values: Sequence[float] | np.ndarray) -> None:
        if len(values) != self.num_sources:
            raise ValueError(f"{len(values)} values for {self.num_sources} source spans")

    def sum(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """Values on source tokens → values on target tokens, preserving the total."""
        self._check(values)
        out = np.zeros(self.num_targets, dtype=np.float64)
        for value, shares in zip(values, self.shares, strict=True):
            for target, share in shares:
                out[target] += float(value) * share
        return out

    def mean(self, values: Sequence[float] | np.ndarray, empty_value: float = 0.5) -> np.ndarray:
        """Share-weighted mean per target token (for probabilities).

        A target token that receives no share of any source token gets `empty_value` (0.5 = neutral).
        """
        self._check(values)
        weighted = np.zeros(self.num_targets, dtype=np.float64)
        weights = np.zeros(self.num_targets, dtype=np.float64)
        for value, shares in zip(values, self.shares, strict=True):
            for target, share in shares:
                weighted[target] += float(value) * share
                weights[target] += share
        out = np.full(self.num_targets, empty_value, dtype=np.float64)
        has = weights > 0
        out[has] = weighted[has] / weights[has]
        return out


def realign_sum(values: Sequence[float] | np.ndarray, source_spans: Sequence[Span],
                target_spans: Sequence[Span]) -> np.ndarray:
    """Values on source tokens → values on target tokens, preserving the total."""
    return SpanAlignment(source_spans, target_spans).sum(values)


def realign_mean(values: Sequence[float] | np.ndarray, source_spans: Sequence[Span],
                 target_spans: Sequence[Span], empty_value: float = 0.5) -> np.ndarray:
    """Values on source tokens → share-weighted mean per target token."""
    return SpanAlignment(source_spans, target_spans).mean(values, empty_value)

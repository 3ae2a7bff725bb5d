"""Pure re-alignment of per-token values from one tokenization of a text to another.

The discriminator scores its own tokens; a policy with a different tokenizer sends its response
tokens as [start, end) character spans. Each discriminator token's reward is split among the caller's
tokens in proportion to their character overlap, so the sum over the response is preserved exactly
(up to float rounding). A discriminator token overlapping no caller token (say, whitespace the caller
dropped) gives its reward to the nearest caller token, so nothing is lost.

The split never builds the source × target overlap matrix (which has S × T entries when spans overlap
each other): with c(x) the number of targets covering character x, source s overlaps targets in
D_s = Σ_{x∈s} c(x) characters, and target t receives Σ_{x∈t} w(x) with w(x) = Σ_{s∋x} v_s / D_s. Both
are prefix sums over the elementary intervals between span boundaries, so the cost is
O((S + T) log(S + T)) time and O(S + T) memory whatever the spans and the text length.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

Span = tuple[int, int]


def _as_array(spans: Sequence[Span], name: str) -> np.ndarray:
    array = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    bad = np.flatnonzero((array[:, 0] < 0) | (array[:, 1] < array[:, 0]))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} span {i} = [{array[i, 0]}, {array[i, 1]}) is not a valid character span")
    return array


def _nearest_targets(sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each source span, the nearest target: least distance in characters (0 when touching or
    overlapping), ties to a non-empty target, then to the lowest index. O((S + T) log T)."""
    num_targets = len(targets)
    starts, ends = targets[:, 0], targets[:, 1]
    rank = (starts == ends).astype(np.int64) * num_targets + np.arange(num_targets)  # lower is preferred

    def best_per_value(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.lexsort((rank, values))  # by value, then preference
        sorted_values = values[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = sorted_values[1:] != sorted_values[:-1]
        return sorted_values[first], order[first]

    end_values, end_best = best_per_value(ends)  # targets left of a source: the greatest end ≤ its start
    start_values, start_best = best_per_value(starts)  # right of it: the least start ≥ its end
    # Targets strictly inside the gap (start < source end and end > source start) are at distance 0.
    # Sources here overlap no target's characters, so those are empty targets inside a non-empty source,
    # or targets around an empty source; found with sorted empty positions and a sweep respectively.
    empty_positions = np.sort(starts[starts == ends])
    empty_order = np.flatnonzero(starts == ends)[np.argsort(starts[starts == ends], kind="stable")]
    out = np.empty(len(sources), dtype=np.int64)
    by_start = np.argsort(starts, kind="stable")
    active: list[tuple[int, int]] = []  # (rank, target) of targets with start < the sweep position
    next_target = 0
    for s in np.argsort(sources[:, 0], kind="stable"):
        a, b = int(sources[s, 0]), int(sources[s, 1])
        candidates: list[tuple[int, int, int]] = []  # (distance, rank, target)
        i = int(np.searchsorted(end_values, a, side="right")) - 1
        if i >= 0:
            t = int(end_best[i])
            candidates.append((a - int(end_values[i]), int(rank[t]), t))
        j = int(np.searchsorted(start_values, b, side="left"))
        if j < len(start_values):
            t = int(start_best[j])
            candidates.append((int(start_values[j]) - b, int(rank[t]), t))
        if a == b:
            while next_target < num_targets and starts[by_start[next_target]] < a:
                t = int(by_start[next_target])
                heapq.heappush(active, (int(rank[t]), t))
                next_target += 1
            while active and ends[active[0][1]] <= a:  # ends ≤ a stay ≤ every later (larger) a
                heapq.heappop(active)
            if active:
                candidates.append((0, *active[0]))
        else:
            lo, hi = np.searchsorted(empty_positions, [a + 1, b])  # empty targets with a < position < b
            if lo < hi:
                t = int(empty_order[lo:hi].min())
                candidates.append((0, int(rank[t]), t))
        out[s] = min(candidates)[2]
    return out


class SpanAlignment:
    """How source tokens' values are shared out to target tokens (computed once, applied to many values)."""

    def __init__(self, source_spans: Sequence[Span], target_spans: Sequence[Span]) -> None:
        if not len(target_spans):
            raise ValueError("there are no target spans to align to")
        sources = _as_array(source_spans, "source")
        targets = _as_array(target_spans, "target")
        self.num_sources, self.num_targets = len(sources), len(targets)
        points = np.unique(np.concatenate([sources.ravel(), targets.ravel()]))
        widths = np.diff(points)  # elementary interval i = [points[i], points[i + 1])
        self._src = np.searchsorted(points, sources)  # spans as [first interval, end interval)
        self._tgt = np.searchsorted(points, targets)
        coverage = self._cover_count(self._tgt, len(widths))  # targets covering each interval
        self._weighted_coverage = np.concatenate([[0], np.cumsum(widths * coverage)])
        overlap = self._range_sum(self._weighted_coverage, self._src)  # D_s in characters, exact
        self._overlapping = overlap > 0
        self._overlap = np.maximum(overlap, 1).astype(np.float64)
        self._widths = widths
        self._covered_targets = self._range_sum(
            np.concatenate([[0], np.cumsum(widths * self._cover_count(self._src[self._overlapping], len(widths)))]),
            self._tgt) > 0  # targets sharing at least one character with an overlapping source
        orphans = np.flatnonzero(~self._overlapping)
        self._orphans = orphans
        self._orphan_targets = _nearest_targets(sources[orphans], targets) if orphans.size else orphans

    @staticmethod
    def _cover_count(spans: np.ndarray, num_intervals: int) -> np.ndarray:
        delta = np.zeros(num_intervals + 1, dtype=np.int64)
        np.add.at(delta, spans[:, 0], 1)
        np.add.at(delta, spans[:, 1], -1)
        return np.cumsum(delta[:-1])

    @staticmethod
    def _range_sum(prefix: np.ndarray, spans: np.ndarray) -> np.ndarray:
        return prefix[spans[:, 1]] - prefix[spans[:, 0]]

    def _check(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        if len(values) != self.num_sources:
            raise ValueError(f"{len(values)} values for {self.num_sources} source spans")
        return np.asarray(values, dtype=np.float64)

    def _shared(self, values: np.ndarray) -> np.ndarray:
        """Σ_s values[s] · share(s, t) for each target t."""
        density = np.zeros(len(self._widths) + 1, dtype=np.float64)  # w(x), per interval, as differences
        per_char = np.where(self._overlapping, values / self._overlap, 0.0)
        np.add.at(density, self._src[:, 0], per_char)
        np.add.at(density, self._src[:, 1], -per_char)
        w = np.cumsum(density[:-1])
        out = self._range_sum(np.concatenate([[0.0], np.cumsum(self._widths * w)]), self._tgt)
        out[~self._covered_targets] = 0.0  # exactly 0 where no overlap reaches (not a rounding residue)
        np.add.at(out, self._orphan_targets, values[self._orphans])
        return out

    def sum(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """Values on source tokens → values on target tokens, preserving the total."""
        return self._shared(self._check(values))

    def mean(self, values: Sequence[float] | np.ndarray, empty_value: float = 0.5) -> np.ndarray:
        """Share-weighted mean per target token (for probabilities).

        A target token that receives no share of any source token gets `empty_value` (0.5 = neutral).
        """
        weighted = self._shared(self._check(values))
        weights = self._shared(np.ones(self.num_sources, dtype=np.float64))
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

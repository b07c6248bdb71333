"""Two quantile sketches side by side, bucket by bucket: their CDFs and the largest gap between them.

Sketches of one accuracy share their buckets, so two of them compare with no
values to sort or search; the features of a window are compared with their
reference this way, all in one array.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream.stats.sketch import BucketCounts, QuantileSketch


def _held_by_either(a: BucketCounts, b: BucketCounts) -> tuple[int, int]:
    """The lowest bucket index either holds, and one past the highest (0, 0 for none)."""
    if not a.counts.size:
        return (b.first, b.first + b.counts.size) if b.counts.size else (0, 0)
    if not b.counts.size:
        return a.first, a.first + a.counts.size
    return min(a.first, b.first), max(a.first + a.counts.size, b.first + b.counts.size)


class PairedCounts:
    """Pairs of sketches side by side: each pair's running counts over the same buckets, one row per pair.

    Sketches of one accuracy share their buckets, so two of them compare
    bucket by bucket, with no values to sort or search. Row ``i`` runs, from
    the lowest value up, over the negative buckets either sketch of pair
    ``i`` holds (highest key first), the zero bucket, then the positive
    buckets either holds; shorter rows are padded with their totals. The
    features of a window are compared with their reference this way in a few
    numpy calls for all of them.

    >>> a, b = QuantileSketch(), QuantileSketch()
    >>> a.update_many([-1.0, 1.0, 2.0, 3.0]); b.update_many([3.0, 4.0, 5.0, 6.0])
    >>> paired = PairedCounts([(a, b), (b, b)])
    >>> paired.ks_distances().tolist()
    [0.75, 0.0]
    >>> (sa, ka), (sb, kb) = a.buckets(), b.buckets()  # b's CDF at a's buckets, and at its own
    >>> paired.right_cdf_at(np.stack([sa, sb]), np.stack([ka, kb])).tolist()
    [[0.0, 0.0, 0.0, 0.25], [0.25, 0.5, 0.75, 1.0]]
    """

    __slots__ = ("left_shares", "neg_high", "neg_span", "pos_low", "right_shares")

    def __init__(self, pairs: Sequence[tuple[QuantileSketch, QuantileSketch]]) -> None:
        layouts = []
        for left, right in pairs:
            if left.log_gamma != right.log_gamma:
                raise ValueError("PairedCounts takes pairs of sketches of one relative accuracy")
            neg_low, neg_high = _held_by_either(left.negative, right.negative)
            pos_low, pos_high = _held_by_either(left.positive, right.positive)
            layouts.append((neg_high, neg_high - neg_low, pos_low, pos_high - pos_low))
        width = max((neg_span + 1 + pos_span for _, neg_span, _, pos_span in layouts), default=1)
        # A row per sketch: each pair's left, then its right.
        counts = np.zeros((2 * len(layouts), width), dtype=np.int64)
        row = 0
        for pair, (neg_high, neg_span, pos_low, _) in zip(pairs, layouts, strict=True):
            for sketch in pair:
                neg, pos = sketch.negative, sketch.positive
                if neg.counts.size:
                    counts[row, neg_high - neg.first - neg.counts.size : neg_high - neg.first] = neg.counts[::-1]
                counts[row, neg_span] = sketch.zeros
                if pos.counts.size:
                    start = neg_span + 1 + pos.first - pos_low
                    counts[row, start : start + pos.counts.size] = pos.counts
                row += 1
        running = np.cumsum(counts, axis=1)
        totals = np.array([max(s.count, 1) for pair in pairs for s in pair], dtype=np.float64)
        # The same divisions of the same counts as SketchTable.shares.
        shares = running / totals[:, None]
        self.left_shares, self.right_shares = shares[0::2], shares[1::2]
        # Each pair's layout as a column, to broadcast against its row of buckets.
        layout = np.array(layouts, dtype=np.int64).reshape(-1, 4)
        self.neg_high, self.neg_span, self.pos_low = layout[:, 0:1], layout[:, 1:2], layout[:, 2:3]

    def ks_distances(self) -> np.ndarray:
        """Each pair's largest gap between its two CDFs (the Kolmogorov-Smirnov statistic); 0 for two empty sketches."""
        return np.abs(self.left_shares - self.right_shares).max(axis=1)

    def right_cdf_at(self, signs: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """The right sketch's share of values at or below each given bucket of its pair's left sketch.

        ``signs`` and ``keys`` hold a row of buckets per pair, as :meth:`QuantileSketch.buckets` names them.
        """
        at = np.where(
            signs < 0,
            self.neg_high - 1 - keys,
            np.where(signs == 0, self.neg_span, self.neg_span + 1 + keys - self.pos_low),
        )
        return np.take_along_axis(self.right_shares, at, axis=1)

"""A mergeable quantile sketch with a relative-error guarantee (DDSketch).

Values are counted in logarithmic buckets: bucket ``i`` holds values in
``(gamma**(i-1), gamma**i]`` with ``gamma = (1 + a) / (1 - a)``, so any
quantile is returned within relative error ``a`` of a true sample value of
that rank (Masson, Rim and Lee, "DDSketch", VLDB 2019). Two sketches with
the same accuracy merge exactly by adding bucket counts, which is what lets
a 10-minute view be built from 1-minute windows.

The buckets of each sign are one dense array of counts from a first index,
as DDSketch's own dense stores keep them: a live model holds dozens of
sketches of about a thousand buckets each, and a dict of Python ints had
cost about ten times the memory of an array. The counts are held in the
narrowest unsigned integers their total fits, widened as it grows: a window
pane's buckets rarely reach 65,535, and bucket counts are most of a live
model's memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import Any

import numpy as np

# Values this close to zero are counted as zero: their logarithm is not useful.
_MIN_POSITIVE = 1e-9
# The most buckets add_rows_to_sketches counts in one array for all rows, before it goes row by row.
MAX_SHARED_BUCKETS = 1_000_000
_UINT8, _UINT16, _UINT32, _INT64 = (np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.int64))
_UINT8_MAX, _UINT16_MAX, _UINT32_MAX = (int(np.iinfo(t).max) for t in (_UINT8, _UINT16, _UINT32))


def _count_dtype(total: int) -> np.dtype:
    """The narrowest width for bucket counts of this total (no bucket holds more).

    8 bits suit the sketches of a hopping window's panes, which count a few
    hundred values each over as many buckets.
    """
    if total <= _UINT8_MAX:
        return _UINT8
    if total <= _UINT16_MAX:
        return _UINT16
    return _UINT32 if total <= _UINT32_MAX else _INT64


class BucketCounts:
    """Counts of consecutive bucket indices from ``first``, in one array as narrow as their total allows.

    >>> b = BucketCounts()
    >>> b.add(np.array([3, 3, 5]))
    >>> b.first, b.counts.tolist(), b.span, b.counts.dtype
    (3, [2, 0, 1], 3, dtype('uint8'))
    >>> b.fold_lowest(2)
    >>> [a.tolist() for a in b.nonzero()]
    [[4, 5], [2, 1]]
    >>> b.add_counts(5, np.array([70_000])); b.counts.tolist(), b.counts.dtype
    ([2, 70001], dtype('uint32'))
    """

    __slots__ = ("counts", "first", "total")

    def __init__(self) -> None:
        self.first = 0
        # The counts' sum, kept so that choosing the width on each add does not sum the whole array.
        self.total = 0
        self.counts = np.zeros(0, dtype=_UINT8)

    @property
    def span(self) -> int:
        """Buckets from the lowest to the highest held, empty ones between included."""
        return int(self.counts.size)

    def add(self, indices: np.ndarray) -> None:
        """Count one value in each of ``indices``."""
        low = int(indices.min())
        # bincount over the batch's range of buckets: no sort, unlike np.unique.
        self.add_counts(low, np.bincount(indices - low))

    def add_counts(self, first: int, counts: np.ndarray) -> None:
        """Add ``counts`` of buckets ``first``, ``first + 1``, ..."""
        if counts.size == 0:
            return
        self.total += int(counts.sum())
        dtype = _count_dtype(self.total)
        if self.counts.size == 0:
            self.first, self.counts = first, counts.astype(dtype)
            return
        low = min(self.first, first)
        high = max(self.first + self.counts.size, first + counts.size)
        if low != self.first or high != self.first + self.counts.size or dtype != self.counts.dtype:
            grown = np.zeros(high - low, dtype=dtype)
            grown[self.first - low : self.first - low + self.counts.size] = self.counts
            self.first, self.counts = low, grown
        held = self.counts[first - self.first : first - self.first + counts.size]
        # No bucket can pass the total, which the width fits: the narrowing cast loses nothing.
        np.add(held, counts, out=held, casting="unsafe")

    def fold_lowest(self, span: int) -> None:
        """Fold the lowest buckets into the one above them until at most ``span`` remain."""
        extra = self.counts.size - max(span, 1)
        if extra > 0:
            folded = self.counts[extra:].copy()
            folded[0] += int(self.counts[:extra].sum())
            self.first, self.counts = self.first + extra, folded

    def nonzero(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices and counts of the buckets holding values, lowest index first."""
        held = np.flatnonzero(self.counts)
        return held + self.first, self.counts[held]

    def copy(self) -> BucketCounts:
        out = BucketCounts()
        out.first, out.total, out.counts = self.first, self.total, self.counts.copy()
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BucketCounts):
            return NotImplemented
        return bool(self.first == other.first and np.array_equal(self.counts, other.counts))

    def to_dict(self) -> dict[str, Any]:
        """The first index and the counts from it, as an array (a copy: the live one keeps changing)."""
        return {"first": self.first, "counts": self.counts.copy()}

    @classmethod
    def from_dict(cls, state: dict[Any, Any]) -> BucketCounts:
        """From :meth:`to_dict`, or from a sparse ``{index: count}`` dict (model states before version 3)."""
        out = cls()
        if "counts" in state:
            counts = np.asarray(state["counts"], dtype=np.int64)
            out.first = int(state["first"])
        elif state:
            index = np.array([int(k) for k in state], dtype=np.int64)
            out.first = int(index.min())
            counts = np.zeros(int(index.max()) - out.first + 1, dtype=np.int64)
            counts[index - out.first] = list(state.values())
        else:
            return out
        out.total = int(counts.sum())
        out.counts = counts.astype(_count_dtype(out.total))
        return out


class QuantileSketch:
    """DDSketch-style quantiles within ``relative_accuracy``, mergeable.

    ``max_buckets`` bounds the buckets held, from each sign's lowest to its
    highest, empty ones between included (that is the memory): past it, the
    buckets nearest zero fold together (first the negative, then the
    positive ones), so large values, which operators ask about (p99), keep
    their accuracy.

    >>> s = QuantileSketch(relative_accuracy=0.01)
    >>> s.update_many([float(i) for i in range(1, 1001)])
    >>> abs(s.quantile(0.5) - 500) / 500 <= 0.01
    True
    >>> s.count, s.quantile(0.0) <= 1.01
    (1000, True)
    """

    __slots__ = ("count", "log_gamma", "max_buckets", "negative", "positive", "relative_accuracy", "zeros")

    def __init__(self, relative_accuracy: float = 0.01, max_buckets: int = 2048) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError("relative_accuracy must be between 0 and 1")
        self.relative_accuracy = relative_accuracy
        self.log_gamma = math.log((1 + relative_accuracy) / (1 - relative_accuracy))
        self.max_buckets = max_buckets
        self.positive = BucketCounts()
        self.negative = BucketCounts()
        self.zeros = 0
        self.count = 0

    def update(self, x: float) -> None:
        """Add one value (NaN is ignored)."""
        self.update_many(np.array([x], dtype=np.float64))

    def update_many(self, values: Iterable[float] | np.ndarray) -> None:
        """Add many values at once; NaN values are ignored."""
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        if arr.size == 0:
            return
        self.count += int(arr.size)
        pos = arr[arr > _MIN_POSITIVE]
        neg = -arr[arr < -_MIN_POSITIVE]
        self.zeros += int(arr.size - pos.size - neg.size)
        for magnitudes, store in ((pos, self.positive), (neg, self.negative)):
            if magnitudes.size:
                store.add(np.ceil(np.log(magnitudes) / self.log_gamma).astype(np.int64))
        self._collapse()

    def _collapse(self) -> None:
        over = self.negative.span + self.positive.span - self.max_buckets
        if over <= 0:
            return
        if self.negative.span > 1:
            self.negative.fold_lowest(max(self.negative.span - over, 1))
            over = self.negative.span + self.positive.span - self.max_buckets
        if over > 0:
            self.positive.fold_lowest(self.positive.span - over)

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """A new sketch holding both; accuracies must match."""
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("cannot merge sketches of different accuracy")
        out = QuantileSketch(self.relative_accuracy, max(self.max_buckets, other.max_buckets))
        out.count = self.count + other.count
        out.zeros = self.zeros + other.zeros
        out.positive, out.negative = self.positive.copy(), self.negative.copy()
        out.positive.add_counts(other.positive.first, other.positive.counts)
        out.negative.add_counts(other.negative.first, other.negative.counts)
        out._collapse()
        return out

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0..1), or None when empty."""
        if not 0 <= q <= 1:
            raise ValueError("q must be between 0 and 1")
        if self.count == 0:
            return None
        return float(self.table().quantiles([q])[0])

    def table(self) -> SketchTable:
        """The buckets in value order with running counts: answers many quantiles and CDF values in one sort."""
        gamma = math.exp(self.log_gamma)
        neg_keys, neg_counts = self.negative.nonzero()
        pos_keys, pos_counts = self.positive.nonzero()
        keys = np.concatenate([neg_keys[::-1], pos_keys]).astype(np.float64)
        # The midpoint (in relative terms) of each bucket.
        values = 2.0 * gamma**keys / (gamma + 1.0)
        values[: neg_keys.size] *= -1.0
        counts = np.concatenate([neg_counts[::-1], pos_counts]).astype(np.float64)
        if self.zeros:
            values = np.insert(values, neg_keys.size, 0.0)
            counts = np.insert(counts, neg_keys.size, self.zeros)
        return SketchTable(values, np.cumsum(counts), self.count)

    def buckets(self) -> tuple[np.ndarray, np.ndarray]:
        """The sign (-1, 0 or 1) and key of each bucket holding values, in the order of :meth:`table`'s values.

        >>> s = QuantileSketch()
        >>> s.update_many([-2.0, 0.0, 1.0, 3.0])
        >>> [a.tolist() for a in s.buckets()]
        [[-1, 0, 1, 1], [35, 0, 0, 55]]
        """
        neg_keys, _ = self.negative.nonzero()
        pos_keys, _ = self.positive.nonzero()
        zero = [0] if self.zeros else []
        signs = np.repeat(np.array([-1, 0, 1], dtype=np.int64), [neg_keys.size, len(zero), pos_keys.size])
        return signs, np.concatenate([neg_keys[::-1], np.array(zero, dtype=np.int64), pos_keys])

    def cdf(self, xs: Iterable[float] | np.ndarray) -> np.ndarray:
        """Share of values at or below each of ``xs`` (within the sketch's resolution).

        >>> s = QuantileSketch()
        >>> s.update_many([1.0, 2.0, 3.0, 4.0])
        >>> s.cdf([0.5, 2.0, 10.0]).tolist()
        [0.0, 0.5, 1.0]
        """
        return self.table().cdf(xs)

    def quantiles(self, qs: Iterable[float]) -> dict[str, float | None]:
        """Several quantiles by name, for example ``{"p50": ..., "p99": ...}``."""
        qs = list(qs)
        values = self.table().quantiles(qs).tolist() if self.count else [None] * len(qs)
        return {f"p{round(q * 100, 1):g}": v for q, v in zip(qs, values, strict=True)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantileSketch):
            return NotImplemented
        return (self.relative_accuracy, self.count, self.zeros, self.positive, self.negative) == (
            other.relative_accuracy,
            other.count,
            other.zeros,
            other.positive,
            other.negative,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain state: each sign's buckets as a first index and an array of counts."""
        return {
            "relative_accuracy": self.relative_accuracy,
            "count": self.count,
            "zeros": self.zeros,
            "positive": self.positive.to_dict(),
            "negative": self.negative.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> QuantileSketch:
        """Rebuild from :meth:`to_dict` output, or from the sparse buckets of states saved before it."""
        out = cls(state["relative_accuracy"])
        out.count = state["count"]
        out.zeros = state["zeros"]
        out.positive = BucketCounts.from_dict(state["positive"])
        out.negative = BucketCounts.from_dict(state["negative"])
        return out


def add_rows_to_sketches(sketches: Sequence[QuantileSketch], rows: np.ndarray) -> None:
    """``sketches[i].update_many(rows[i])`` for every row of a 2-D array of finite values, sketches of one accuracy.

    The bucket of every value, and the counts per bucket of every row, come
    from one numpy call each instead of one per row: a model's features are
    updated together, and a batch of a few events costs little more than
    the per-call overhead. The counts are the same as row by row.

    >>> rows = np.array([[1.0, 2.0, 0.0], [-5.0, 5.0, 50.0]])
    >>> a, b, c, d = QuantileSketch(), QuantileSketch(), QuantileSketch(), QuantileSketch()
    >>> add_rows_to_sketches([a, b], rows)
    >>> c.update_many(rows[0]); d.update_many(rows[1])
    >>> a == c and b == d, a.zeros, b.negative.span
    (True, 1, 1)
    """
    if not sketches:
        return
    if not all(s.log_gamma == sketches[0].log_gamma for s in sketches):
        raise ValueError("add_rows_to_sketches takes sketches of one relative accuracy")
    k, n = rows.shape
    if n == 0:
        return
    magnitude = np.abs(rows)
    counted = magnitude > _MIN_POSITIVE
    # The bucket of each value's magnitude, as update_many computes it (1.0 stands in for zeros: bucket 0, unused).
    index = np.ceil(np.log(np.where(counted, magnitude, 1.0)) / sketches[0].log_gamma).astype(np.int64)
    positive = counted & (rows > 0)
    negative = counted & ~positive
    for sketch, zeros in zip(sketches, (n - counted.sum(axis=1)).tolist(), strict=True):
        sketch.count += n
        sketch.zeros += zeros
    for sign, store_of in ((positive, attrgetter("positive")), (negative, attrgetter("negative"))):
        has = sign.any(axis=1)
        if not has.any():
            continue
        # A row without values of this sign gets 0 for both: it is left out below. Masked by
        # np.where, not the reductions' where= argument, which takes a slow path in numpy.
        low = np.where(sign, index, np.iinfo(np.int64).max).min(axis=1) * has
        high = np.where(sign, index, np.iinfo(np.int64).min).max(axis=1) * has
        width = int((high - low).max()) + 1
        rows_with = np.flatnonzero(has).tolist()
        if k * width > MAX_SHARED_BUCKETS:
            # One row's values spanning many orders of magnitude would widen every row's stretch.
            for i in rows_with:
                store_of(sketches[i]).add(index[i][sign[i]])
            continue
        # Each row's buckets in its own stretch of one bincount.
        spread = index - low[:, None] + (np.arange(k) * width)[:, None]
        counts = np.bincount(spread[sign], minlength=k * width).reshape(k, width)
        for i in rows_with:
            store_of(sketches[i]).add_counts(int(low[i]), counts[i, : int(high[i] - low[i]) + 1])
    for sketch in sketches:
        sketch._collapse()


class SketchTable:
    """A sketch's bucket values in increasing order with running counts, for vectorised reads.

    >>> s = QuantileSketch()
    >>> s.update_many([-3.0, 0.0, 1.0, 2.0, 100.0])
    >>> t = s.table()
    >>> t.quantiles([0.0, 0.5, 1.0]).tolist() == [s.quantile(q) for q in (0.0, 0.5, 1.0)]
    True
    >>> t.cdf([0.0, 50.0]).tolist()
    [0.4, 0.8]
    """

    __slots__ = ("count", "running", "shares", "values")

    def __init__(self, values: np.ndarray, running: np.ndarray, count: int) -> None:
        self.values = values
        self.running = running
        self.count = count
        # The share of values at or below each bucket, after a 0 for "below the first": the
        # CDF anywhere is then one lookup at the position a binary search gives.
        self.shares = np.concatenate(([0.0], running / max(count, 1)))

    def quantiles(self, qs: Iterable[float] | np.ndarray) -> np.ndarray:
        """The value at each quantile of ``qs``, as :meth:`QuantileSketch.quantile` answers it."""
        qs = np.asarray(qs, dtype=np.float64)
        if self.count == 0 or self.values.size == 0:
            return np.full(qs.shape, np.nan)
        if np.any((qs < 0) | (qs > 1)):
            raise ValueError("q must be between 0 and 1")
        return self.values[self.quantile_positions(qs)]

    def quantile_positions(self, qs: np.ndarray) -> np.ndarray:
        """Where in :attr:`values` each quantile of ``qs`` (checked, on a table with values) is read."""
        idx = np.searchsorted(self.running, qs * (self.count - 1), side="right")
        return np.minimum(idx, self.values.size - 1)

    def cdf(self, xs: Iterable[float] | np.ndarray) -> np.ndarray:
        """Share of values at or below each of ``xs``."""
        return self.shares[np.searchsorted(self.values, xs, side="right")]

"""A mergeable quantile sketch with a relative-error guarantee (DDSketch).

Values are counted in logarithmic buckets: bucket ``i`` holds values in
``(gamma**(i-1), gamma**i]`` with ``gamma = (1 + a) / (1 - a)``, so any
quantile is returned within relative error ``a`` of a true sample value of
that rank (Masson, Rim and Lee, "DDSketch", VLDB 2019). Two sketches with
the same accuracy merge exactly by adding bucket counts, which is what lets
a 10-minute view be built from 1-minute windows.

The buckets live in plain dicts (cheap to pickle, easy to read) and a batch
of values is bucketed with numpy in one pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

# Values this close to zero are counted as zero: their logarithm is not useful.
_MIN_POSITIVE = 1e-9


class QuantileSketch:
    """DDSketch-style quantiles within ``relative_accuracy``, mergeable.

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
        self.positive: dict[int, int] = {}
        self.negative: dict[int, int] = {}
        self.zeros = 0
        self.count = 0

    def _index(self, magnitude: float) -> int:
        return math.ceil(math.log(magnitude) / self.log_gamma)

    def update(self, x: float) -> None:
        """Add one value (NaN is ignored)."""
        if x != x:  # NaN
            return
        self.count += 1
        if x > _MIN_POSITIVE:
            i = self._index(x)
            self.positive[i] = self.positive.get(i, 0) + 1
        elif x < -_MIN_POSITIVE:
            i = self._index(-x)
            self.negative[i] = self.negative.get(i, 0) + 1
        else:
            self.zeros += 1
        if len(self.positive) + len(self.negative) > self.max_buckets:
            self._collapse()

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
                idx = np.ceil(np.log(magnitudes) / self.log_gamma).astype(np.int64)
                # Counting with bincount over the batch's range of buckets: no sort, unlike np.unique.
                low = int(idx.min())
                counts = np.bincount(idx - low)
                keys = np.flatnonzero(counts)
                for k, c in zip((keys + low).tolist(), counts[keys].tolist(), strict=True):
                    store[k] = store.get(k, 0) + c
        if len(self.positive) + len(self.negative) > self.max_buckets:
            self._collapse()

    def _collapse(self) -> None:
        # Fold the buckets nearest zero together: the large values, which
        # operators ask about (p99), keep their accuracy.
        while len(self.positive) + len(self.negative) > self.max_buckets:
            if len(self.negative) > 1:
                keys = sorted(self.negative)
                low, nxt = keys[0], keys[1]
                self.negative[nxt] += self.negative.pop(low)
            elif len(self.positive) > 1:
                keys = sorted(self.positive)
                low, nxt = keys[0], keys[1]
                self.positive[nxt] += self.positive.pop(low)
            else:
                return

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """A new sketch holding both; accuracies must match."""
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("cannot merge sketches of different accuracy")
        out = QuantileSketch(self.relative_accuracy, max(self.max_buckets, other.max_buckets))
        out.count = self.count + other.count
        out.zeros = self.zeros + other.zeros
        for src, dst in ((self.positive, out.positive), (self.negative, out.negative)):
            dst.update(src)
        for src, dst in ((other.positive, out.positive), (other.negative, out.negative)):
            for k, c in src.items():
                dst[k] = dst.get(k, 0) + c
        out._collapse()
        return out

    def _value(self, index: int) -> float:
        # The midpoint (in relative terms) of bucket ``index``.
        gamma = math.exp(self.log_gamma)
        return 2.0 * gamma**index / (gamma + 1.0)

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0..1), or None when empty."""
        if not 0 <= q <= 1:
            raise ValueError("q must be between 0 and 1")
        if self.count == 0:
            return None
        rank = q * (self.count - 1)
        seen = 0
        for k in sorted(self.negative, reverse=True):
            seen += self.negative[k]
            if seen > rank:
                return -self._value(k)
        seen += self.zeros
        if seen > rank:
            return 0.0
        for k in sorted(self.positive):
            seen += self.positive[k]
            if seen > rank:
                return self._value(k)
        return self._value(max(self.positive)) if self.positive else 0.0

    def table(self) -> SketchTable:
        """The buckets in value order with running counts: answers many quantiles and CDF values in one sort."""
        gamma = math.exp(self.log_gamma)
        neg = sorted(self.negative.items(), reverse=True)
        pos = sorted(self.positive.items())
        keys = np.array([k for k, _ in neg] + [k for k, _ in pos], dtype=np.float64)
        values = 2.0 * gamma**keys / (gamma + 1.0)
        values[: len(neg)] *= -1.0
        counts = [c for _, c in neg] + [c for _, c in pos]
        if self.zeros:
            values = np.insert(values, len(neg), 0.0)
            counts.insert(len(neg), self.zeros)
        return SketchTable(values, np.cumsum(np.asarray(counts, dtype=np.float64)), self.count)

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

    def to_dict(self) -> dict[str, Any]:
        """State for JSON: bucket keys are ints, so serialise with orjson's ``OPT_NON_STR_KEYS``.

        Copying the bucket dicts as they are is what keeps a checkpoint of a
        busy model cheap; converting every key to a string cost most of it.
        """
        return {
            "relative_accuracy": self.relative_accuracy,
            "count": self.count,
            "zeros": self.zeros,
            "positive": dict(self.positive),
            "negative": dict(self.negative),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> QuantileSketch:
        """Rebuild from :meth:`to_dict` output."""
        out = cls(state["relative_accuracy"])
        out.count = state["count"]
        out.zeros = state["zeros"]
        out.positive = {int(k): v for k, v in state["positive"].items()}
        out.negative = {int(k): v for k, v in state["negative"].items()}
        return out


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

    __slots__ = ("count", "running", "values")

    def __init__(self, values: np.ndarray, running: np.ndarray, count: int) -> None:
        self.values = values
        self.running = running
        self.count = count

    def quantiles(self, qs: Iterable[float] | np.ndarray) -> np.ndarray:
        """The value at each quantile of ``qs``, as :meth:`QuantileSketch.quantile` answers it."""
        qs = np.asarray(qs, dtype=np.float64)
        if self.count == 0 or self.values.size == 0:
            return np.full(qs.shape, np.nan)
        if np.any((qs < 0) | (qs > 1)):
            raise ValueError("q must be between 0 and 1")
        idx = np.searchsorted(self.running, qs * (self.count - 1), side="right")
        return self.values[np.minimum(idx, self.values.size - 1)]

    def cdf(self, xs: Iterable[float] | np.ndarray) -> np.ndarray:
        """Share of values at or below each of ``xs``."""
        xs = np.asarray(xs, dtype=np.float64)
        if self.values.size == 0:
            return np.zeros_like(xs)
        idx = np.searchsorted(self.values, xs, side="right") - 1
        return np.where(idx >= 0, self.running[np.clip(idx, 0, None)] / max(self.count, 1), 0.0)

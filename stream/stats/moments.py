"""Count, mean, variance, min and max of a stream, mergeable across windows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


class RunningMoments:
    """Welford's running moments; two instances merge exactly (Chan et al.).

    >>> m = RunningMoments()
    >>> for x in (1.0, 2.0, 3.0, 4.0):
    ...     m.update(x)
    >>> m.count, m.mean, round(m.std, 4), m.min, m.max
    (4, 2.5, 1.291, 1.0, 4.0)
    >>> a, b = RunningMoments(), RunningMoments()
    >>> a.update(1.0); a.update(2.0); b.update(3.0); b.update(4.0)
    >>> merged = a.merge(b)
    >>> merged.mean == m.mean and abs(merged.var - m.var) < 1e-12
    True
    """

    __slots__ = ("count", "m2", "max", "mean", "min")

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def update(self, x: float) -> None:
        """Add one value."""
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x

    def update_many(self, values: Any) -> None:
        """Add many values at once (a numpy array or a sequence), merged exactly."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0:
            return
        batch = RunningMoments()
        batch.count = int(arr.size)
        batch.mean = float(arr.mean())
        batch.m2 = float(((arr - batch.mean) ** 2).sum())
        batch.min = float(arr.min())
        batch.max = float(arr.max())
        merged = self.merge(batch)
        self.count, self.mean, self.m2, self.min, self.max = (
            merged.count,
            merged.mean,
            merged.m2,
            merged.min,
            merged.max,
        )

    @property
    def var(self) -> float:
        """Sample variance (0 with fewer than two values)."""
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0

    @property
    def std(self) -> float:
        """Sample standard deviation."""
        return math.sqrt(self.var)

    def merge(self, other: RunningMoments) -> RunningMoments:
        """A new instance holding the moments of both inputs."""
        out = RunningMoments()
        n = self.count + other.count
        if n == 0:
            return out
        delta = other.mean - self.mean
        out.count = n
        out.mean = self.mean + delta * other.count / n
        out.m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
        out.min = min(self.min, other.min)
        out.max = max(self.max, other.max)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (empty min/max as null)."""
        return {
            "count": self.count,
            "mean": self.mean,
            "m2": self.m2,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RunningMoments:
        """Rebuild from :meth:`to_dict` output."""
        out = cls()
        out.count = state["count"]
        out.mean = state["mean"]
        out.m2 = state["m2"]
        out.min = math.inf if state["min"] is None else state["min"]
        out.max = -math.inf if state["max"] is None else state["max"]
        return out

    def summary(self) -> dict[str, Any]:
        """Readable figures: count, mean, std, min, max."""
        return {
            "count": self.count,
            "mean": self.mean if self.count else None,
            "std": self.std if self.count else None,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
        }


def add_rows_to_moments(moments: Sequence[RunningMoments], rows: np.ndarray) -> None:
    """``moments[i].update_many(rows[i])`` for every row of a 2-D array, in a few numpy calls for all rows.

    Each row's mean and sum of squares are reduced along the row as
    ``update_many`` reduces its array, so the results are the same, bit for
    bit; only the per-call overhead is shared.

    >>> a, b = RunningMoments(), RunningMoments()
    >>> add_rows_to_moments([a, b], np.array([[1.0, 2.0, 3.0], [10.0, 10.0, 40.0]]))
    >>> (a.count, a.mean, a.max), (b.count, b.mean, b.min)
    ((3, 2.0, 3.0), (3, 20.0, 10.0))
    """
    if rows.shape[1] == 0:
        return
    n = int(rows.shape[1])
    means = rows.mean(axis=1)
    m2s = ((rows - means[:, None]) ** 2).sum(axis=1)
    for m, mean, m2, low, high in zip(
        moments, means.tolist(), m2s.tolist(), rows.min(axis=1).tolist(), rows.max(axis=1).tolist(), strict=True
    ):
        batch = RunningMoments()
        batch.count, batch.mean, batch.m2, batch.min, batch.max = n, mean, m2, low, high
        merged = m.merge(batch)
        m.count, m.mean, m.m2, m.min, m.max = merged.count, merged.mean, merged.m2, merged.min, merged.max

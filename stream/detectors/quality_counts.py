"""What data quality reads of a window at a test: each feature's counts as they stood at the test's count.

A test may fall inside a batch the window has already taken in (see
:class:`~stream.detectors.quality.DataQualityRule`): the counts of the
batch's events after the test's count are then taken off again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from stream.stats.columns import BatchColumns, is_numeric, numeric_column
from stream.stats.features import OTHER, CategoricalStats, NumericStats, category


class WindowAt(NamedTuple):
    """A tumbling window as it stood at a test: where it starts and how many events it held."""

    start: float
    count: int


@dataclass(slots=True)
class LaterEvents:
    """The events of a batch after a test's count: their positions in the batch, the batch and its columns."""

    index: np.ndarray
    events: list[dict[str, Any]]
    columns: BatchColumns
    rows: list[dict[str, Any] | None] | None = None

    def values(self, name: str) -> list[Any]:
        """The feature's raw values in these events (None where absent)."""
        if self.rows is None:
            self.rows = [self.events[i].get("features") for i in self.index.tolist()]
        return [row.get(name) if row else None for row in self.rows]

    def numbers(self, name: str) -> np.ndarray:
        """The feature's column in these events (NaN where missing or not a number)."""
        return self.columns.get(name)[self.index]


@dataclass(slots=True)
class FeatureCounts:
    """What the checks read of a feature's statistics in a window: counts, and the categories' counts.

    >>> events = [{"features": {"c": v}} for v in ("DE", None, "FR", "DE")]
    >>> c = FeatureCounts(False, count=4, missing=1, counts={"DE": 2, "FR": 1})
    >>> c.take_off(LaterEvents(np.array([1, 2]), events, BatchColumns(events)), "c")
    >>> c.count, c.missing, c.counts
    (2, 0, {'DE': 2})
    """

    numeric: bool
    count: int = 0
    missing: int = 0
    wrong_type: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, stats: NumericStats | CategoricalStats) -> FeatureCounts:
        """The counts of a window's feature statistics."""
        if isinstance(stats, NumericStats):
            return cls(True, stats.count, stats.missing, stats.wrong_type)
        return cls(False, stats.count, stats.missing, stats.wrong_type, stats.counts)

    def take_off(self, later: LaterEvents, name: str) -> None:
        """Remove feature ``name`` of the ``later`` events, as :class:`~stream.stats.features.FeatureSet` counted it."""
        if not later.index.size:
            return
        self.count -= later.index.size
        if self.numeric and not self.wrong_type:
            # No value in the window is of a wrong type, so every NaN of the column is a missing value.
            self.missing -= int(np.isnan(later.numbers(name)).sum())
            return
        values = later.values(name)
        if self.numeric:
            numbers, wrong = numeric_column(values)
            self.missing -= int(np.isnan(numbers).sum()) - wrong
            self.wrong_type -= wrong
            return
        self.missing -= sum(1 for v in values if v is None)
        self.wrong_type -= sum(1 for v in values if is_numeric(v))
        taken = Counter(category(v) for v in values if v is not None and not is_numeric(v))
        # Categories met once the cap was reached were counted as OTHER, not under their names.
        passed_over = sum(n for k, n in taken.items() if k not in self.counts)
        if passed_over:
            taken[OTHER] += passed_over
        self.counts = {k: n - taken.get(k, 0) for k, n in self.counts.items() if n > taken.get(k, 0)}

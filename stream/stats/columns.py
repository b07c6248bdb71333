"""A batch's values as numeric columns: how a value is read as a number, and each feature's and field's column.

Booleans and strings are of the wrong type for a number, and missing values
are NaN. :class:`BatchColumns` extracts a column from a batch's events once, for
the windows, the reference and every detector that reads it.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np


def is_numeric(value: Any) -> bool:
    """Whether ``value`` is a number (booleans are categories here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


_PLAIN_NUMBERS = frozenset({float, int, type(None)})


def numeric_column(values: list[Any]) -> tuple[np.ndarray, int]:
    """Values as float64 (NaN where missing or not a number) and how many were of a wrong type.

    Booleans and strings are wrong types here, not numbers:

    >>> column, wrong = numeric_column([1, 2.5, None, True, "3"])
    >>> column.tolist(), wrong
    ([1.0, 2.5, nan, nan, nan], 2)
    """
    if _PLAIN_NUMBERS.issuperset(map(type, values)):
        # The usual case, converted in one call (numpy turns None into NaN).
        return np.array(values, dtype=np.float64), 0
    column = np.fromiter((v if is_numeric(v) else math.nan for v in values), np.float64, len(values))
    wrong = sum(1 for v in values if v is not None and not is_numeric(v))
    return column, wrong


def feature_names_in(rows: list[dict[str, Any] | None]) -> dict[str, None]:
    """The names in ``rows`` of features (None: an event without features), in order of first appearance.

    >>> list(feature_names_in([{"b": 1}, None, {"a": 2, "b": 3}]))
    ['b', 'a']
    """
    # One pass over every row's names in C: a dict per row and an update took twice as long.
    return dict.fromkeys(itertools.chain.from_iterable(filter(None, rows)))


class BatchColumns:
    """One batch's columns, each extracted once and shared by the windows, the reference and the detectors.

    A feature's numbers (:meth:`get`), a top-level field's numbers such as
    ``latency_ms`` (:meth:`field`), the rows of features (:meth:`rows`) and
    the feature names in order of appearance (:meth:`feature_names`).
    :meth:`part` gives the columns of a run of the batch's events as views of
    the batch's, without extracting them again.

    >>> cols = BatchColumns([{"features": {"a": 1.0}, "latency_ms": 5}, {"features": {"a": "x"}}, {}])
    >>> cols.get("a").tolist(), cols.part(1, 3).get("a").tolist(), cols.field("latency_ms").tolist()
    ([1.0, nan, nan], [nan, nan], [5.0, nan, nan])
    >>> list(cols.feature_names()), list(cols.part(2, 3).feature_names())
    (['a'], [])
    """

    __slots__ = ("_cache", "_events", "_failed", "_fields", "_names", "_raw", "_rows", "_span", "_whole", "_wrong")

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._events = events
        self._rows: list[dict[str, Any] | None] | None = None
        self._names: dict[str, None] | None = None
        self._cache: dict[str, np.ndarray] = {}
        self._fields: dict[str, np.ndarray] = {}
        self._raw: dict[str, list[Any]] = {}
        self._failed: np.ndarray | None = None
        # Per feature of a whole batch, how many of its values were of a wrong type.
        self._wrong: dict[str, int] = {}
        self._whole: BatchColumns | None = None
        self._span = slice(None)

    def __len__(self) -> int:
        return len(self._events)

    def part(self, start: int, stop: int) -> BatchColumns:
        """The columns of ``events[start:stop]`` (views of this batch's; this object for all of it)."""
        if start == 0 and stop >= len(self._events):
            return self
        out = BatchColumns(self._events[start:stop])
        if self._whole is None:
            out._whole, out._span = self, slice(start, stop)
        else:
            out._whole, out._span = self._whole, slice(self._span.start + start, self._span.start + stop)
        return out

    def rows(self) -> list[dict[str, Any] | None]:
        """Each event's ``features`` (None where it has none)."""
        if self._rows is None:
            self._rows = [e.get("features") for e in self._events]
        return self._rows

    def feature_names(self) -> dict[str, None]:
        """The names of the features in these events, in order of first appearance (do not modify)."""
        if self._names is None:
            self._names = feature_names_in(self.rows())
        return self._names

    def get(self, name: str) -> np.ndarray:
        """The feature's values; NaN where it is missing or not a number."""
        column = self._cache.get(name)
        if column is None:
            whole = self._whole
            column = self._cache[name] = self._feature(name) if whole is None else whole.get(name)[self._span]
        return column

    def field(self, name: str) -> np.ndarray:
        """A top-level field's values (``timestamp``, ``latency_ms``, ...); NaN where missing or not a number."""
        column = self._fields.get(name)
        if column is None:
            whole = self._whole
            column = self._fields[name] = (
                numeric_column(self._values(name))[0] if whole is None else whole.field(name)[self._span]
            )
        return column

    def values(self, name: str) -> list[Any]:
        """A top-level field's values as the events hold them (None where missing); do not modify.

        >>> BatchColumns([{"prediction": "cat"}, {}, {"prediction": 1}]).part(1, 3).values("prediction")
        [None, 1]
        """
        column = self._raw.get(name)
        if column is None:
            whole = self._whole
            column = self._raw[name] = self._values(name) if whole is None else whole.values(name)[self._span]
        return column

    def failed(self) -> np.ndarray:
        """Whether each event failed (its ``error`` is set): read once for the error counts and the error rate.

        >>> BatchColumns([{"error": "oom"}, {"error": None}, {"error": ""}]).part(0, 2).failed().tolist()
        [True, False]
        """
        if self._failed is None:
            whole = self._whole
            self._failed = (
                np.fromiter(map(bool, self._values("error")), bool, len(self))
                if whole is None
                else whole.failed()[self._span]
            )
        return self._failed

    def _feature(self, name: str) -> np.ndarray:
        column, self._wrong[name] = numeric_column([row.get(name) if row else None for row in self.rows()])
        return column

    def _values(self, name: str) -> list[Any]:
        return [e.get(name) for e in self._events]

    def with_wrong_typed(self, name: str) -> tuple[np.ndarray, int] | None:
        """The feature's values and how many were of a wrong type, or None where that count is not known.

        A run of a batch knows its count only when the whole batch held no
        wrong-typed value (the column's NaN does not tell a missing value from
        a wrong one); a caller then reads the events itself.

        >>> cols = BatchColumns([{"features": {"a": 1.0}}, {"features": {"a": "x"}}, {}])
        >>> cols.with_wrong_typed("a")[1], cols.part(0, 1).with_wrong_typed("a")
        (1, None)
        >>> clean = BatchColumns([{"features": {"a": 1.0}}, {}])
        >>> clean.part(1, 2).with_wrong_typed("a")[0].tolist(), clean.part(1, 2).with_wrong_typed("a")[1]
        ([nan], 0)
        """
        column = self.get(name)
        whole = self if self._whole is None else self._whole
        wrong = whole._wrong.get(name)
        if wrong is None or (wrong and whole is not self):
            return None
        return column, wrong

"""Counting outliers per event-time window, shared by the z-score and IQR rules.

A single odd value is not an incident: a rule fires once the current window
holds at least ``min_outliers`` outliers making up at least ``min_share`` of
its events, and then not again in the same window.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stream.detectors.base import tumbling_window
from stream.stats.window_stats import window_start


class WindowOutlierCount:
    """Outliers of the current tumbling window and whether the window has fired.

    >>> count = WindowOutlierCount(window_s=60, min_outliers=2, min_share=0.0)
    >>> count.see(1.0); count.outlier(5.0, 100.0, 1.0)
    False
    >>> count.see(2.0); count.outlier(6.0, 120.0, 2.0)
    True
    >>> count.see(3.0); count.outlier(7.0, 130.0, 3.0)   # once per window
    False
    """

    __slots__ = (
        "fired_window",
        "first_outlier_at",
        "max_score",
        "min_outliers",
        "min_share",
        "outliers",
        "window_count",
        "window_s",
        "window_start",
        "worst_value",
    )

    def __init__(self, window_s: float = 60.0, min_outliers: int = 5, min_share: float = 0.01) -> None:
        self.window_s = window_s
        self.min_outliers = min_outliers
        self.min_share = min_share
        self.window_start: float | None = None
        self.fired_window: float | None = None
        self._reset()

    def _reset(self) -> None:
        self.window_count = 0
        self.outliers = 0
        self.max_score = 0.0
        self.worst_value: float | None = None
        self.first_outlier_at: float | None = None

    def see(self, ts: float) -> None:
        """Count one event at event time ``ts`` (opening a new window when due)."""
        start = window_start(ts, self.window_s)
        if self.window_start is None or start > self.window_start:
            self.window_start = start
            self._reset()
        self.window_count += 1

    def see_many(self, timestamps: np.ndarray) -> None:
        """:meth:`see` each of ``timestamps`` in turn, none an outlier.

        >>> count = WindowOutlierCount(window_s=60)
        >>> count.see_many(np.array([50.0, 70.0, 65.0, 119.0])); count.window_start, count.window_count
        (60.0, 3)
        """
        if not len(timestamps):
            return
        starts = np.floor(timestamps / self.window_s) * self.window_s
        current = -math.inf if self.window_start is None else self.window_start
        # An event opens a window when it starts later than every window before it.
        highest_before = np.maximum(current, np.concatenate([[-math.inf], np.maximum.accumulate(starts)[:-1]]))
        opened = np.flatnonzero(starts > highest_before)
        if opened.size:
            self.window_start = float(starts[opened[-1]])
            self._reset()
            self.window_count = len(timestamps) - int(opened[-1])
        else:
            self.window_count += len(timestamps)

    def outlier(self, score: float, value: float, ts: float) -> bool:
        """Count the event just seen as an outlier; True when the window should fire now."""
        self.outliers += 1
        if score > self.max_score:
            self.max_score, self.worst_value = score, value
        if self.first_outlier_at is None:
            self.first_outlier_at = ts
        if self.fired_window == self.window_start or self.outliers < self.min_outliers:
            return False
        if self.outliers / self.window_count < self.min_share:
            return False
        self.fired_window = self.window_start
        return True

    @property
    def share(self) -> float:
        """Outliers as a share of the window's events."""
        return self.outliers / self.window_count if self.window_count else 0.0

    def window(self) -> dict[str, Any]:
        """The alert's ``window`` field."""
        assert self.window_start is not None
        return tumbling_window(self.window_start, self.window_s)

    def evidence(self, score_name: str) -> dict[str, Any]:
        """What the window saw, for the alert's evidence."""
        return {
            "outliers": self.outliers,
            "window_count": self.window_count,
            "outlier_share": round(self.share, 6),
            score_name: round(self.max_score, 4),
            "worst_value": self.worst_value,
            "first_outlier_at": self.first_outlier_at,
            "change_started_at": self.first_outlier_at,
        }

    def scores(self) -> dict[str, float]:
        """``outlier_ratio`` and ``max_score`` of the current window."""
        return {"outlier_ratio": self.share, "max_score": self.max_score}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {name: getattr(self, name) for name in self.__slots__}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        for name in self.__slots__:
            setattr(self, name, state[name])

"""The IQR rule (Tukey's fences): values beyond ``k`` interquartile ranges.

The quartiles are those of the last ``memory`` values that were not
outliers, recomputed every ``refresh`` values (at fixed counts, so a replay
in other batches draws the same fences); outliers are counted per event-time
window like the z-score rule, so it fires once a window holds enough of
them. Unlike the z-score it assumes no distribution shape.

A lasting level shift is learnt instead of alerted on for ever: when more
than half of the last ``warmup`` values were outliers, those values become
the new baseline (one alert, then the new level is normal).

Reference: J. W. Tukey, "Exploratory Data Analysis" (1977).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.detectors.base import Finding, check_state_version, plain_series
from stream.detectors.outliers import WindowOutlierCount

STATE_VERSION = 2


class IQRRule:
    """Outliers beyond ``Q1 - k*IQR`` or ``Q3 + k*IQR``, counted per window.

    Parameters:
        signal: the signal's name, as it appears in findings.
        k: the fences' distance from the quartiles, in interquartile ranges.
        warmup: values learnt before testing starts, and the span judged for a lasting shift.
        memory: non-outlier values the quartiles are computed from.
        refresh: values between two computations of the quartiles.
        min_outliers, min_share: what a window needs to fire (see ``WindowOutlierCount``).

    >>> rule = IQRRule("latency_ms", warmup=100, min_outliers=3, window_s=60)
    >>> rule.update([10.0 + (i % 10) for i in range(500)], [i * 0.01 for i in range(500)])
    []
    >>> [f.detector for f in rule.update([90.0] * 10, [6.0] * 10)]
    ['iqr']
    >>> shifted = [90.0 + (i % 10) for i in range(300)]   # the new level, for good
    >>> len(rule.update(shifted, [70.0 + i * 0.01 for i in range(300)]))  # one alert, then the level is learnt
    1
    >>> rule.update(shifted, [130.0 + i * 0.01 for i in range(300)])    # learnt: quiet in the next windows
    []
    """

    name = "iqr"

    def __init__(
        self,
        signal: str,
        *,
        k: float = 3.0,
        warmup: int = 200,
        memory: int = 2000,
        refresh: int = 100,
        min_outliers: int = 5,
        min_share: float = 0.01,
        window_s: float = 60.0,
        kind: str = "anomaly",
        unit: str = "",
    ) -> None:
        if k <= 0 or warmup < 4 or memory < warmup or refresh < 1:
            raise ValueError("k must be positive, warmup at least 4, memory at least warmup, refresh at least 1")
        self.signal = signal
        self.k = k
        self.warmup = warmup
        self.refresh = refresh
        self.window_s = window_s
        self.kind = kind
        self.unit = unit
        self.normal: deque[float] = deque(maxlen=memory)
        self.recent: deque[float] = deque(maxlen=warmup)  # every value, outlier or not
        self.recent_outliers: deque[bool] = deque(maxlen=warmup)
        self.outliers_in_recent = 0  # sum(recent_outliers), kept as it goes: it is read for every outlier
        self.quartiles: tuple[float, float] | None = None
        self.seen = 0
        self.count = WindowOutlierCount(window_s, min_outliers, min_share)

    def fences(self) -> tuple[float, float]:
        """The current low and high fences."""
        q1, q3 = self.quartiles or (0.0, 0.0)
        iqr = max(q3 - q1, 1e-9)
        return q1 - self.k * iqr, q3 + self.k * iqr

    def _learn_quartiles(self) -> None:
        q1, q3 = np.quantile(np.asarray(self.normal), [0.25, 0.75])
        self.quartiles = (float(q1), float(q3))

    def update(self, values: Sequence[float], timestamps: Sequence[float]) -> list[Finding]:
        """Feed values with their event timestamps; return any findings."""
        findings: list[Finding] = []
        count = self.count
        lo, hi = self.fences()
        # Plain floats: numpy scalars must not leak into the JSON state.
        for x, ts in zip(*plain_series(values, timestamps), strict=True):
            count.see(ts)
            self.seen += 1
            outlier = False
            if self.quartiles is not None and (x < lo or x > hi):
                outlier = True
                q1, q3 = self.quartiles
                distance = (lo - x if x < lo else x - hi) / max(q3 - q1, 1e-9)
                if count.outlier(distance, x, ts):
                    findings.append(self._finding(ts))
            else:
                self.normal.append(x)
            self.recent.append(x)
            if len(self.recent_outliers) == self.warmup:
                self.outliers_in_recent -= self.recent_outliers[0]
            self.recent_outliers.append(outlier)
            self.outliers_in_recent += outlier
            if outlier and len(self.recent) == self.warmup and 2 * self.outliers_in_recent > self.warmup:
                # Most recent values are "outliers": the level moved for good. Learn it.
                self.normal.clear()
                self.normal.extend(self.recent)
                self.recent_outliers.extend([False] * self.warmup)
                self.outliers_in_recent = 0
                self._learn_quartiles()
                lo, hi = self.fences()
            elif self.seen % self.refresh == 0 and len(self.normal) >= self.warmup:
                self._learn_quartiles()
                lo, hi = self.fences()
        return findings

    def _finding(self, ts: float) -> Finding:
        lo, hi = self.fences()
        count = self.count
        q1, q3 = self.quartiles or (0.0, 0.0)
        unit = f" {self.unit}" if self.unit else ""
        return Finding(
            signal=self.signal,
            detector=self.name,
            kind=self.kind,
            severity="critical" if count.share >= 0.1 else "warning",
            value=round(count.max_score, 4),
            threshold=self.k,
            baseline={"q1": q1, "q3": q3, "fence_low": lo, "fence_high": hi, "count": len(self.normal)},
            message=(
                f"{count.outliers} of {count.window_count} events in the current {self.window_s:g} s window had "
                f"{self.signal} outside the fences {lo:.4g}-{hi:.4g}{unit} (quartiles {q1:.4g} / {q3:.4g} "
                f"of the last {len(self.normal)} ordinary values, k={self.k:g}); worst {count.worst_value:.4g}{unit}."
            ),
            event_time=ts,
            window=count.window(),
            evidence=count.evidence("max_iqr_distance"),
        )

    def scores(self) -> dict[str, float]:
        """The current window's outlier share and worst score, for dashboards."""
        return self.count.scores()

    def to_dict(self) -> dict[str, Any]:
        """Plain, versioned state."""
        return {
            "state_version": STATE_VERSION,
            "normal": list(self.normal),
            "recent": list(self.recent),
            "recent_outliers": list(self.recent_outliers),
            "quartiles": None if self.quartiles is None else list(self.quartiles),
            "seen": self.seen,
            "window": self.count.to_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved; a state of another version is refused."""
        check_state_version(state, STATE_VERSION, "iqr")
        self.normal = deque((float(v) for v in state["normal"]), maxlen=self.normal.maxlen)
        self.recent = deque((float(v) for v in state["recent"]), maxlen=self.warmup)
        self.recent_outliers = deque((bool(v) for v in state["recent_outliers"]), maxlen=self.warmup)
        self.outliers_in_recent = sum(self.recent_outliers)
        self.quartiles = (
            None if state["quartiles"] is None else (float(state["quartiles"][0]), float(state["quartiles"][1]))
        )
        self.seen = int(state["seen"])
        self.count.load_state(state["window"])

"""The IQR rule (Tukey's fences): values beyond ``k`` interquartile ranges.

The quartiles are learnt online with river's streaming quantiles (P²) from
the values that were not outliers, after a warm-up; outliers are counted per
event-time window like the z-score rule, so it fires once a window holds
enough of them. Unlike the z-score it assumes no distribution shape.
"""

from __future__ import annotations

import base64
import pickle
from collections.abc import Sequence
from typing import Any

from river import stats

from stream.detectors.base import Finding
from stream.detectors.outliers import WindowOutlierCount


class IQRRule:
    """Outliers beyond ``Q1 - k*IQR`` or ``Q3 + k*IQR``, counted per window.

    >>> rule = IQRRule("latency_ms", warmup=100, min_outliers=3, window_s=60)
    >>> rule.update([10.0 + (i % 10) for i in range(500)], [i * 0.01 for i in range(500)])
    []
    >>> [f.detector for f in rule.update([90.0] * 10, [6.0] * 10)]
    ['iqr']
    """

    name = "iqr"

    def __init__(
        self,
        signal: str,
        *,
        k: float = 3.0,
        warmup: int = 200,
        min_outliers: int = 5,
        min_share: float = 0.01,
        window_s: float = 60.0,
        kind: str = "anomaly",
        unit: str = "",
    ) -> None:
        if k <= 0:
            raise ValueError("k must be positive")
        self.signal = signal
        self.k = k
        self.warmup = warmup
        self.window_s = window_s
        self.kind = kind
        self.unit = unit
        self.q1 = stats.Quantile(0.25)
        self.q3 = stats.Quantile(0.75)
        self.seen = 0
        self.count = WindowOutlierCount(window_s, min_outliers, min_share)

    def fences(self) -> tuple[float, float]:
        """The current low and high fences."""
        q1, q3 = self.q1.get() or 0.0, self.q3.get() or 0.0
        iqr = max(q3 - q1, 1e-9)
        return q1 - self.k * iqr, q3 + self.k * iqr

    def update(self, values: Sequence[float], timestamps: Sequence[float]) -> list[Finding]:
        """Feed values with their event timestamps; return any findings."""
        findings: list[Finding] = []
        count = self.count
        for x, ts in zip(values, timestamps, strict=True):
            x, ts = float(x), float(ts)  # numpy scalars must not leak into the JSON state
            count.see(ts)
            if self.seen >= self.warmup:
                lo, hi = self.fences()
                if x < lo or x > hi:
                    iqr = max((self.q3.get() or 0.0) - (self.q1.get() or 0.0), 1e-9)
                    distance = (lo - x if x < lo else x - hi) / iqr
                    if count.outlier(distance, x, ts):
                        findings.append(self._finding(ts))
                    continue
            self.q1.update(x)
            self.q3.update(x)
            self.seen += 1
        return findings

    def _finding(self, ts: float) -> Finding:
        lo, hi = self.fences()
        count = self.count
        q1, q3 = self.q1.get(), self.q3.get()
        unit = f" {self.unit}" if self.unit else ""
        return Finding(
            signal=self.signal,
            detector=self.name,
            kind=self.kind,
            severity="critical" if count.share >= 0.1 else "warning",
            value=round(count.max_score, 4),
            threshold=self.k,
            baseline={"q1": q1, "q3": q3, "fence_low": lo, "fence_high": hi, "count": self.seen},
            message=(
                f"{count.outliers} of {count.window_count} events in the current {self.window_s:g} s window had "
                f"{self.signal} outside the fences {lo:.4g}-{hi:.4g}{unit} (quartiles {q1:.4g} / {q3:.4g} "
                f"over {self.seen} events, k={self.k:g}); worst {count.worst_value:.4g}{unit}."
            ),
            event_time=ts,
            window=count.window(),
            evidence=count.evidence("max_iqr_distance"),
        )

    def scores(self) -> dict[str, float]:
        """The current window's outlier share and worst score, for dashboards."""
        return self.count.scores()

    def to_dict(self) -> dict[str, Any]:
        """State (river quantiles pickled, base64)."""
        return {
            "quantiles": base64.b64encode(pickle.dumps((self.q1, self.q3))).decode(),
            "seen": self.seen,
            "window": self.count.to_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        self.q1, self.q3 = pickle.loads(base64.b64decode(state["quantiles"]))
        self.seen = state["seen"]
        self.count.load_state(state["window"])

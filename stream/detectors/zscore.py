"""The z-score rule: values far outside a learned baseline, counted per window.

A single slow request is not an incident, so the rule counts outliers in the
current event-time window and fires once that window holds at least
``min_outliers`` of them and they make up at least ``min_share`` of its
events. The baseline is an exponentially weighted mean and variance; values
are clipped to the threshold before they teach the baseline, so an incident
does not become the new normal at once but a lasting level shift does, over
about ``half_life`` events.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.detectors.base import Finding, check_state_version, float_series
from stream.detectors.lean_imports import smooth
from stream.detectors.outliers import WindowOutlierCount

# The layout of to_dict; a state without a version has this layout too (see check_state_version).
STATE_VERSION = 1
# Fewer values than this go one by one: taking values at once costs about as much as
# twenty of them one by one, whatever their number.
MIN_VALUES_AT_ONCE = 32


class ZScoreRule:
    """Per-window outlier count against an exponentially weighted baseline.

    ``log_scale`` compares ``log1p(value)``, which suits latencies: they are
    skewed to the right, and a slowdown multiplies rather than adds.

    >>> rule = ZScoreRule("latency_ms", warmup=50, min_outliers=3, window_s=60)
    >>> normal = [10.0 + (i % 5) for i in range(100)]
    >>> rule.update(normal, [float(i) * 0.1 for i in range(100)])
    []
    >>> found = rule.update([200.0] * 5, [20.0] * 5)
    >>> found[0].detector, found[0].evidence["outliers"]
    ('zscore', 3)
    >>> rule.update([200.0], [21.0])  # one alert per window
    []
    """

    name = "zscore"

    def __init__(
        self,
        signal: str,
        *,
        threshold: float = 4.0,
        warmup: int = 200,
        min_outliers: int = 5,
        min_share: float = 0.01,
        half_life: float = 2000.0,
        log_scale: bool = True,
        std_floor: float = 0.02,
        window_s: float = 60.0,
        kind: str = "anomaly",
        unit: str = "ms",
        outlier_weight: float = 0.25,
    ) -> None:
        if threshold <= 0:
            raise ValueError("threshold must be positive")
        if warmup < 2:
            raise ValueError("warmup must be at least 2")
        self.signal = signal
        self.threshold = threshold
        self.warmup = warmup
        self.min_outliers = min_outliers
        self.min_share = min_share
        self.alpha = 1.0 - 0.5 ** (1.0 / half_life)
        self.log_scale = log_scale
        self.std_floor = std_floor
        self.window_s = window_s
        self.kind = kind
        self.unit = unit
        self.outlier_weight = outlier_weight
        # Baseline, in transformed units.
        self.seen = 0
        self.mean = 0.0
        self.var = 0.0
        self.count = WindowOutlierCount(window_s, min_outliers, min_share)

    def _untransform(self, y: float) -> float:
        return math.expm1(y) if self.log_scale else y

    @property
    def std(self) -> float:
        """Baseline standard deviation (transformed units), never below the floor."""
        return max(math.sqrt(self.var), self.std_floor)

    @property
    def ready(self) -> bool:
        """Whether the warm-up is over and the rule may fire."""
        return self.seen >= self.warmup

    def update(self, values: Sequence[float], timestamps: Sequence[float]) -> list[Finding]:
        """Feed values with their event timestamps; return any findings.

        Once the baseline's weight has settled at ``alpha`` (after ``1 /
        alpha`` values), the runs of values between two outliers are taken
        in at once: the weighted mean and variance are linear recursions
        there, run as filters. Outliers, and the values before, go one by one.
        """
        xs, ts = float_series(values, timestamps)
        ys = np.log1p(np.maximum(xs, 0.0)) if self.log_scale else xs
        settled = max(self.warmup, math.ceil(1.0 / self.alpha))
        findings: list[Finding] = []
        i = 0
        while i < len(xs):
            # After an outlier the next value is often one too (a burst): that needs no filter run to tell.
            at_once = self.seen >= settled and len(xs) - i >= MIN_VALUES_AT_ONCE
            if at_once and self._score(float(ys[i])) <= self.threshold:
                i += self._take_inliers(ys[i:], ts[i:])
                if i == len(xs):
                    break
            # numpy scalars must not leak into the JSON state
            finding = self._one(float(xs[i]), float(ys[i]), float(ts[i]))
            if finding is not None:
                findings.append(finding)
            i += 1
        return findings

    def _score(self, y: float) -> float:
        """How many baseline standard deviations ``y`` (transformed) lies from the baseline's mean."""
        return abs(y - self.mean) / self.std

    def _one(self, x: float, y: float, ts: float) -> Finding | None:
        """Take in one value (``y`` transformed); the finding if its window fires with it."""
        count = self.count
        count.see(ts)
        if self.seen >= self.warmup:
            z = self._score(y)
            if z > self.threshold:
                found = self._finding(ts) if count.outlier(z, x, ts) else None
                clip = self.threshold * self.std
                self._drift_toward(min(max(y, self.mean - clip), self.mean + clip))
                return found
        self._learn(y)
        return None

    def _take_inliers(self, ys: np.ndarray, ts: np.ndarray) -> int:
        """Take in the values of ``ys`` up to the first outlier (the baseline settled); return how many."""
        keep = 1.0 - self.alpha
        means = smooth(self.alpha, keep, ys, np.array([keep * self.mean]))
        diffs = ys - np.concatenate([[self.mean], means[:-1]])
        variances = smooth(keep * self.alpha, keep, diffs * diffs, np.array([keep * self.var]))
        before = np.maximum(np.sqrt(np.concatenate([[self.var], variances[:-1]])), self.std_floor)
        outliers = np.flatnonzero(np.abs(diffs) / before > self.threshold)
        taken = int(outliers[0]) if outliers.size else len(ys)
        if taken:
            self.mean, self.var = float(means[taken - 1]), float(variances[taken - 1])
            self.seen += taken
            self.count.see_many(ts[:taken])
        return taken

    def _learn(self, y: float) -> None:
        self.seen += 1
        alpha = max(self.alpha, 1.0 / self.seen)
        diff = y - self.mean
        incr = alpha * diff
        self.mean += incr
        self.var = (1.0 - alpha) * (self.var + diff * incr)

    def _drift_toward(self, clipped: float) -> None:
        # An outlier moves the mean a little (so a lasting level shift is
        # learnt) but never widens the variance: letting incident values
        # inflate it would make the rule go blind within seconds.
        self.seen += 1
        self.mean += self.alpha * self.outlier_weight * (clipped - self.mean)

    def baseline(self) -> dict[str, Any]:
        """The baseline in the signal's own units."""
        std = self.std
        return {
            "median": round(self._untransform(self.mean), 6),
            "normal_low": round(self._untransform(self.mean - self.threshold * std), 6),
            "normal_high": round(self._untransform(self.mean + self.threshold * std), 6),
            "count": self.seen,
            "scale": "log1p" if self.log_scale else "linear",
            "mean_transformed": self.mean,
            "std_transformed": std,
        }

    def _finding(self, ts: float) -> Finding:
        base = self.baseline()
        count = self.count
        severity = "critical" if count.max_score >= 2 * self.threshold or count.share >= 0.1 else "warning"
        unit = self.unit
        worst = count.worst_value if count.worst_value is not None else float("nan")
        direction = "above" if worst > base["median"] else "below"
        message = (
            f"{count.outliers} of {count.window_count} events in the current "
            f"{self.window_s:g} s window had {self.signal} {direction} the normal range "
            f"{base['normal_low']:.1f}-{base['normal_high']:.1f} {unit} "
            f"(baseline median {base['median']:.1f} {unit} over {self.seen} events); "
            f"worst {worst:.1f} {unit}, z={count.max_score:.1f} > {self.threshold:g}."
        )
        return Finding(
            signal=self.signal,
            detector=self.name,
            kind=self.kind,
            severity=severity,
            value=round(count.max_score, 4),
            threshold=self.threshold,
            baseline=base,
            message=message,
            event_time=ts,
            window=count.window(),
            evidence=count.evidence("max_abs_z"),
        )

    def scores(self) -> dict[str, float]:
        """The current window's outlier share and worst score, for dashboards."""
        return self.count.scores()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready learned state (the parameters come from configuration)."""
        return {
            "state_version": STATE_VERSION,
            "seen": self.seen,
            "mean": self.mean,
            "var": self.var,
            "window": self.count.to_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        check_state_version(state, STATE_VERSION, "zscore")
        self.seen, self.mean, self.var = state["seen"], state["mean"], state["var"]
        self.count.load_state(state["window"])

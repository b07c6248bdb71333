"""Changed correlations between features: each window's against the warm-up's, pair by pair.

Fisher's z test per pair, Bonferroni-corrected over the pairs, with alpha
spent over a window's tests (:class:`~stream.detectors.base.WindowCheckpoints`)
and a change of at least ``min_change``: a relation that fades without making
single vectors extreme still fires, as ``correlation``. Fed by
:class:`~stream.detectors.multivariate.MahalanobisRule`, which learns the
warm-up's correlations.

Reference: R. A. Fisher (1915), "Frequency distribution of the values of the
correlation coefficient in samples from an indefinitely large population",
Biometrika 10(4).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from stream.detectors.base import Finding, WindowCheckpoints, tumbling_window
from stream.stats.window_stats import window_start


class CorrelationShift:
    """Sums of one window's feature vectors, and the test of their correlations against a reference.

    >>> rng = np.random.default_rng(1)
    >>> shift = CorrelationShift(["a", "b"], warmup=2000, window_s=60.0, min_events=200)
    >>> shift.reference = correlation(np.array([[1.0, 0.9], [0.9, 1.0]]))
    >>> same = rng.multivariate_normal([0, 0], [[1.0, 0.9], [0.9, 1.0]], 1000)
    >>> shift.accumulate(same, 0.0)
    >>> shift.test(0.0, 1000, 59.0)
    []
    >>> apart = rng.multivariate_normal([0, 0], [[1.0, 0.0], [0.0, 1.0]], 1000)
    >>> shift.accumulate(apart, 60.0)
    >>> [(f.detector, f.evidence["pairs"][0]["features"]) for f in shift.test(60.0, 1000, 119.0)]
    [('correlation', ['a', 'b'])]
    """

    def __init__(
        self,
        features: list[str],
        warmup: int,
        window_s: float,
        *,
        alpha: float = 0.001,
        min_change: float = 0.2,
        min_events: int = 200,
    ) -> None:
        p = len(features)
        self.features = features
        self.warmup = warmup
        self.window_s = window_s
        self.alpha = alpha
        self.min_change = min_change
        self.min_events = min_events
        self.reference: np.ndarray | None = None  # the warm-up's correlations, fixed
        self.start: float | None = None
        self.n = 0
        self.sum = np.zeros(p)
        self.outer = np.zeros((p, p))
        self.checkpoints = WindowCheckpoints(min_events)
        self.fired = False

    def accumulate(self, x: np.ndarray, first_time: float) -> None:
        start = window_start(first_time, self.window_s)
        if start != self.start:
            self.start, self.n = start, 0
            self.sum = np.zeros(len(self.features))
            self.outer = np.zeros((len(self.features), len(self.features)))
        self.n += x.shape[0]
        self.sum += x.sum(axis=0)
        self.outer += x.T @ x

    def events_until_test(self, window_start: float, count: int) -> int | None:
        """Events the window starting at ``window_start`` (holding ``count``) takes before its next test.

        None: this window had its alert. See :class:`WindowCheckpoints`.
        """
        if self.fired and window_start == self.checkpoints.window_start:
            return None
        return self.checkpoints.events_until_due(window_start, count)

    def test(self, window_start: float, count: int, event_time: float) -> list[Finding]:
        """Compare this window's correlations with the warm-up's when the window (holding ``count``) is due.

        At most one finding per window.
        """
        if self.checkpoints.new_window(window_start):
            self.fired = False
        if self.fired or not self.checkpoints.reached(window_start, count):
            return []
        n = self.n
        if self.reference is None or n < self.min_events or len(self.features) < 2:
            return []
        mean = self.sum / n
        cov = self.outer / n - np.outer(mean, mean)
        corr = correlation(cov)
        upper = np.triu_indices(len(self.features), k=1)
        ref = self.reference[upper]
        now = corr[upper]
        se = math.sqrt(1 / max(n - 3, 1) + 1 / max(self.warmup - 3, 1))
        z = np.abs(np.arctanh(np.clip(now, -0.999, 0.999)) - np.arctanh(np.clip(ref, -0.999, 0.999))) / se
        level = self.checkpoints.level(self.alpha) / len(ref)
        # norm.sf(z) is ndtr(-z), without scipy.stats checking its arguments.
        changed = (2 * special.ndtr(-z) < level) & (np.abs(now - ref) >= self.min_change)
        if not changed.any():
            return []
        self.fired = True
        order = np.argsort(-np.abs(now - ref) * changed)
        pairs = [
            {
                "features": [self.features[upper[0][k]], self.features[upper[1][k]]],
                "reference": round(float(ref[k]), 4),
                "window": round(float(now[k]), 4),
            }
            for k in order[: min(5, int(changed.sum()))]
        ]
        top = pairs[0]
        a, b = top["features"]
        biggest = abs(top["window"] - top["reference"])
        return [
            Finding(
                signal="features",
                detector="correlation",
                kind="drift",
                severity="critical" if biggest >= 0.5 else "warning",
                value=top["window"],
                threshold=self.min_change,
                baseline={"correlation": top["reference"], "events": self.warmup, "pairs": len(ref)},
                message=(
                    f"the correlation of {a} and {b} is {top['window']:.2f} in this window's {n} events, "
                    f"{top['reference']:.2f} in the first {self.warmup}; {int(changed.sum())} of {len(ref)} "
                    "feature pairs changed (Fisher z test, Bonferroni over pairs)."
                ),
                event_time=event_time,
                window=tumbling_window(self.start or 0.0, self.window_s),
                evidence={"pairs": pairs, "window_events": n, "level": level},
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain state (two keys of the multivariate rule's state)."""
        return {
            "reference_corr": None if self.reference is None else self.reference.tolist(),
            "correlation_window": {
                "start": self.start,
                "n": self.n,
                "sum": self.sum.tolist(),
                "outer": self.outer.tolist(),
                "checkpoints": self.checkpoints.to_dict(),
                "fired": self.fired,
            },
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        corr = state["reference_corr"]
        self.reference = None if corr is None else np.array(corr)
        w = state["correlation_window"]
        self.start, self.n = w["start"], int(w["n"])
        self.checkpoints.load_state(w["checkpoints"])
        self.sum, self.outer, self.fired = np.array(w["sum"]), np.array(w["outer"]), w["fired"]


def correlation(cov: np.ndarray) -> np.ndarray:
    """The correlation matrix of a covariance matrix (0 where a feature does not vary)."""
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    scale = np.outer(sd, sd)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(scale > 0, cov / scale, 0.0)
    return np.clip(corr, -1.0, 1.0)

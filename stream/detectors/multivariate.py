"""Multivariate outliers: feature vectors far from the learnt joint distribution.

Each event's numeric features (at most ``max_features`` of them, missing
values imputed with the running mean) are compared with a running mean and
covariance by their squared Mahalanobis distance, which accounts for
correlated features: a fraud score can be unusual for the *combination* of
amount and country risk while each alone looks ordinary. The threshold is
*learnt*: the ``quantile`` (0.999) of the distances of normal events, read
from a mergeable quantile sketch (1 % relative error), times ``margin``. Outliers are counted per window like
the other rules, and the alert names the features that made the worst vector
unusual.

Each window's correlations are also compared with those of the warm-up,
pair by pair (Fisher's z test, Bonferroni-corrected over the pairs, with
alpha spent over a window's tests like the reference drift, and a change
of at least ``min_correlation_change``): a relation that fades without
making single vectors extreme still fires, as ``correlation``.

(river's HalfSpaceTrees was tried first and dropped: on 5 Gaussian features
its scores for clear two-feature outliers fell below the 99th percentile of
normal scores, so no threshold separated them.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stream.detectors.base import Finding, check_state_version
from stream.detectors.correlation import CorrelationShift, correlation
from stream.detectors.outliers import WindowOutlierCount
from stream.stats.columns import BatchColumns
from stream.stats.sketch import QuantileSketch
from stream.stats.window_stats import WindowStats

STATE_VERSION = 3


class MahalanobisRule:
    """Outlier feature vectors by Mahalanobis distance above a learnt quantile.

    >>> rng = np.random.default_rng(0)
    >>> rule = MahalanobisRule(["a", "b"], min_outliers=3)
    >>> cov = [[1.0, 0.9], [0.9, 1.0]]      # a and b move together
    >>> xs = rng.multivariate_normal([0, 0], cov, 6000)
    >>> normal = [{"timestamp": i * 0.01, "features": {"a": a, "b": b}} for i, (a, b) in enumerate(xs)]
    >>> [f for k in range(0, 6000, 100) for f in rule.update(normal[k:k + 100])]
    []
    >>> odd = [{"timestamp": 70.0, "features": {"a": 1.5, "b": -1.5}}] * 20   # each alone is ordinary
    >>> [(f.detector, f.evidence["unusual_features"][0]["feature"] in "ab") for f in rule.update(odd)]
    [('mahalanobis', True)]
    """

    name = "mahalanobis"

    def __init__(
        self,
        features: list[str],
        *,
        warmup: int = 2000,
        quantile: float = 0.999,
        margin: float = 1.5,
        half_life: float = 693.0,
        min_outliers: int = 5,
        min_share: float = 0.01,
        window_s: float = 60.0,
        log_features: list[str] | None = None,
        alpha: float = 0.001,
        min_correlation_change: float = 0.2,
        min_events: int = 200,
    ) -> None:
        if not features:
            raise ValueError("at least one feature is needed")
        self.features = list(features)
        # Positive, right-skewed features (amounts, counts) are compared as logs: on their raw
        # scale a lognormal tail alone puts vectors past any quantile-based limit.
        logged = set(log_features or ())
        self.log_mask = np.array([name in logged for name in self.features])
        p = len(self.features)
        self.warmup = warmup
        self.quantile = quantile
        self.margin = margin
        # The weight of each new normal event in the running mean and covariance.
        self.learning_rate = 1.0 - 0.5 ** (1.0 / half_life)
        self.window_s = window_s
        self.seen = 0
        self.mean = np.zeros(p)
        self.cov = np.eye(p)
        self.m2 = np.zeros((p, p))
        self.distances = QuantileSketch()  # squared distances of normal events
        self.count = WindowOutlierCount(window_s, min_outliers, min_share)
        self.worst: list[dict[str, Any]] = []
        self.correlations = CorrelationShift(
            self.features, warmup, window_s, alpha=alpha, min_change=min_correlation_change, min_events=min_events
        )

    def _matrix(self, columns: BatchColumns) -> np.ndarray:
        x = np.column_stack([columns.get(name) for name in self.features])
        if self.log_mask.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                x[:, self.log_mask] = np.log(np.maximum(x[:, self.log_mask], 1e-12))
        return np.where(np.isnan(x), self.mean, x)

    def _learn_warmup(self, x: np.ndarray) -> None:
        # Chan's batch update of mean and co-moment matrix.
        n_a, n_b = self.seen, x.shape[0]
        mean_b = x.mean(axis=0)
        m2_b = (x - mean_b).T @ (x - mean_b)
        delta = mean_b - self.mean
        n = n_a + n_b
        self.mean = self.mean + delta * n_b / n
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * n_a * n_b / n
        self.seen = n
        self.cov = self.m2 / max(n - 1, 1)

    def _learn(self, x: np.ndarray) -> None:
        # One exponentially weighted step for the whole batch, with the weight
        # the batch's events would have had one by one.
        n = x.shape[0]
        if n == 0:
            return
        w = 1.0 - (1.0 - self.learning_rate) ** n
        batch_mean = x.mean(axis=0)
        batch_cov = (x - batch_mean).T @ (x - batch_mean) / n
        delta = batch_mean - self.mean
        self.mean = self.mean + w * delta
        self.cov = (1 - w) * (self.cov + w * np.outer(delta, delta)) + w * batch_cov
        self.seen += n

    def _distances(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # A small ridge keeps a constant or duplicated feature from making the matrix singular.
        scale = np.sqrt(np.clip(np.diag(self.cov), 1e-12, None))
        corr = self.cov / np.outer(scale, scale) + 1e-6 * np.eye(len(scale))
        z = (x - self.mean) / scale
        solved = np.linalg.solve(corr, z.T).T
        return np.einsum("ij,ij->i", z, solved), z

    def update(self, events: list[dict[str, Any]], columns: BatchColumns | None = None) -> list[Finding]:
        """Score each event's feature vector, learn from the normal ones; return findings.

        ``columns`` are the batch's feature values when the caller has them already.
        """
        if not events:
            return []
        if columns is None:
            columns = BatchColumns(events)
        x = self._matrix(columns)
        self.correlations.accumulate(x, float(events[0]["timestamp"]))
        if self.seen < self.warmup:
            self._learn_warmup(x)
            if self.seen >= self.warmup:
                self.correlations.reference = correlation(self.cov)
            return []
        d2, z = self._distances(x)
        limit = self.distances.quantile(self.quantile) if self.distances.count else None
        findings = []
        scoring = limit is not None and self.seen >= self.warmup + 1000
        outside = d2 > limit * self.margin if scoring else np.zeros(len(events), dtype=bool)
        times = columns.field("timestamp")
        # Each outlier is counted after the normal events before it, which are counted at once.
        counted = 0
        for i in np.flatnonzero(outside).tolist():
            self.count.see_many(times[counted : i + 1])
            counted = i + 1
            ts = float(times[i])
            if self.outlier(float(d2[i]), z[i], x[i], ts):
                findings.append(self._finding(ts, limit * self.margin))
        self.count.see_many(times[counted:])
        self.distances.update_many(d2[~outside])
        self._learn(x[~outside])
        return findings

    def outlier(self, d2: float, z: np.ndarray, x: np.ndarray, ts: float) -> bool:
        """Count the vector just seen (its squared distance, z-scores and values) as an outlier; True to fire now."""
        if d2 >= self.count.max_score:
            order = np.argsort(-np.abs(z))[:3]
            self.worst = [
                {"feature": self.features[j], "z": round(float(z[j]), 3), "value": self._raw(x[j], j)} for j in order
            ]
        return self.count.outlier(d2, d2, ts)

    def _raw(self, value: float, j: int) -> float:
        return float(np.exp(value)) if self.log_mask[j] else float(value)

    def check_window(
        self, window: WindowStats, events: list[dict[str, Any]], columns: BatchColumns, event_time: float
    ) -> list[Finding]:
        """Score the new events, then test the window's correlations when a test is due."""
        return self.update(events, columns) + self.test_correlations(window.start, window.count, event_time)

    def events_until_test(self, window_start: float, count: int) -> int | None:
        """Events the window starting at ``window_start`` (holding ``count``) takes before its correlation test."""
        return self.correlations.events_until_test(window_start, count)

    def test_correlations(self, window_start: float, count: int, event_time: float) -> list[Finding]:
        """Compare this window's correlations with the warm-up's when a test is due (see :class:`CorrelationShift`)."""
        return self.correlations.test(window_start, count, event_time)

    def _finding(self, ts: float, limit: float) -> Finding:
        count = self.count
        names = ", ".join(f"{w['feature']} ({w['z']:+.1f} sd)" for w in self.worst)
        return Finding(
            signal="features",
            detector=self.name,
            kind="anomaly",
            severity="critical" if count.share >= 0.1 else "warning",
            value=round(math.sqrt(count.max_score), 4),
            threshold=round(math.sqrt(limit), 4),
            baseline={
                "distance_quantile": self.quantile,
                "margin": self.margin,
                "events": self.seen,
                "features": len(self.features),
            },
            message=(
                f"{count.outliers} of {count.window_count} events in the current {self.window_s:g} s window had "
                f"unusual feature combinations (Mahalanobis distance {math.sqrt(count.max_score):.1f} > learnt "
                f"limit {math.sqrt(limit):.1f}); most unusual: {names}."
            ),
            event_time=ts,
            window=count.window(),
            evidence={**count.evidence("max_distance_squared"), "unusual_features": self.worst},
        )

    def scores(self) -> dict[str, float]:
        """The current window's outlier share and worst score, for dashboards."""
        return self.count.scores()

    def to_dict(self) -> dict[str, Any]:
        """Plain, versioned state."""
        return {
            "state_version": STATE_VERSION,
            "features": self.features,
            "seen": self.seen,
            "mean": self.mean.tolist(),
            "cov": self.cov.tolist(),
            "m2": self.m2.tolist(),
            "distances": self.distances.to_dict(),
            **self.correlations.to_dict(),
            "window": self.count.to_dict(),
            "worst": self.worst,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved (if it watched the same features)."""
        if state["features"] != self.features:
            return
        check_state_version(state, STATE_VERSION, "mahalanobis")
        self.seen = state["seen"]
        self.mean, self.cov, self.m2 = np.array(state["mean"]), np.array(state["cov"]), np.array(state["m2"])
        self.distances = QuantileSketch.from_dict(state["distances"])
        self.correlations.load_state(state)
        self.count.load_state(state["window"])
        self.worst = state["worst"]

"""The statistics of one stretch of event time: counts, latency, errors, model outputs and features.

Mergeable: a tumbling or hopping window is the merge of its panes (see
:mod:`stream.stats.windows`), and a reference profile is one of these.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from stream.stats.columns import BatchColumns
from stream.stats.features import (
    OTHER,
    CategoricalStats,
    FeatureSet,
    NumericStats,
    add_rows_to_numeric_stats,
)


def window_start(timestamp: float, size_s: float) -> float:
    """Start of the window of ``size_s`` seconds holding ``timestamp``.

    >>> window_start(125.0, 60)
    120.0
    """
    return float(math.floor(timestamp / size_s) * size_s)


class WindowStats:
    """Every signal of one model version over one stretch of event time.

    >>> w = WindowStats(start=0.0, end=60.0)
    >>> w.update([{"timestamp": 1.0, "latency_ms": 10.0, "prediction": 1, "error": None},
    ...           {"timestamp": 2.0, "latency_ms": 30.0, "prediction": 0, "error": "oom"}])
    >>> s = w.summary()
    >>> s["count"], s["error_rate"], s["latency_ms"]["mean"], s["errors_by_kind"]
    (2, 0.5, 20.0, {'oom': 1})
    """

    __slots__ = (
        "confidence",
        "count",
        "end",
        "error_kinds",
        "errors",
        "features",
        "first_event_time",
        "last_event_time",
        "latency",
        "prediction_classes",
        "prediction_scores",
        "start",
        "tokens_in",
        "tokens_out",
    )

    def __init__(self, start: float, end: float, max_features: int = 200, max_categories: int = 100) -> None:
        self.start = start
        self.end = end
        self.count = 0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.latency = NumericStats()
        self.confidence = NumericStats()
        self.prediction_classes = CategoricalStats(max_categories)
        self.prediction_scores = NumericStats()
        self.tokens_in = NumericStats()
        self.tokens_out = NumericStats()
        self.features = FeatureSet(max_features, max_categories)
        self.first_event_time: float | None = None
        self.last_event_time: float | None = None

    def update(
        self,
        events: list[dict[str, Any]],
        tracked: dict[str, None] | None = None,
        kinds: dict[str, str] | None = None,
        columns: BatchColumns | None = None,
    ) -> None:
        """Add a batch of decoded events (all of this window).

        ``tracked`` limits the features counted to those names; ``kinds`` fixes
        their kinds; ``columns`` are these events' columns when some are
        extracted already (see :class:`BatchColumns`).
        """
        if not events:
            return
        if columns is None:
            columns = BatchColumns(events)
        self.count += len(events)
        times = columns.field("timestamp")
        lo, hi = float(times.min()), float(times.max())
        if self.first_event_time is None or lo < self.first_event_time:
            self.first_event_time = lo
        if self.last_event_time is None or hi > self.last_event_time:
            self.last_event_time = hi
        failed = np.flatnonzero(columns.failed())
        if failed.size:
            errors = Counter(events[i]["error"] for i in failed.tolist())
            self.errors += failed.size
            known = self.error_kinds
            for kind, c in errors.items():
                # Bounded like categories: error texts with request ids in them are all distinct.
                if kind not in known and len(known) >= self.prediction_classes.max_categories:
                    kind = OTHER
                known[kind] = known.get(kind, 0) + c
        add_rows_to_numeric_stats(
            [self.latency, self.confidence, self.tokens_in, self.tokens_out],
            np.stack([columns.field(name) for name in ("latency_ms", "confidence", "tokens_in", "tokens_out")]),
        )
        classes: list[Any] = []
        scores: list[float] = []
        for e in events:
            p = e.get("prediction")
            if isinstance(p, float):
                scores.append(p)
            elif isinstance(p, list):
                # A vector of scores: the predicted class is the best index.
                classes.append(int(np.argmax(p)) if p else None)
            else:
                classes.append(p)
        if classes:
            self.prediction_classes.update_many(classes)
        if scores:
            self.prediction_scores.update_many(np.asarray(scores, dtype=np.float64))
        self.features.update(columns.rows(), tracked, kinds, columns)

    def merge(self, other: WindowStats) -> WindowStats:
        """One window spanning both (statistics merged exactly)."""
        out = WindowStats(min(self.start, other.start), max(self.end, other.end))
        out.count = self.count + other.count
        out.errors = self.errors + other.errors
        out.error_kinds = dict(Counter(self.error_kinds) + Counter(other.error_kinds))
        for name in (
            "latency",
            "confidence",
            "prediction_classes",
            "prediction_scores",
            "tokens_in",
            "tokens_out",
        ):
            setattr(out, name, getattr(self, name).merge(getattr(other, name)))
        out.features = self.features.merge(other.features)
        firsts = [t for t in (self.first_event_time, other.first_event_time) if t is not None]
        lasts = [t for t in (self.last_event_time, other.last_event_time) if t is not None]
        out.first_event_time = min(firsts) if firsts else None
        out.last_event_time = max(lasts) if lasts else None
        return out

    @property
    def size_s(self) -> float:
        """Length of the window in seconds."""
        return self.end - self.start

    def throughput(self, watermark: float | None = None, size_s: float | None = None) -> float | None:
        """Events per second over the part of the window that has passed by ``watermark`` (the newest event time).

        A window still filling is divided by the time elapsed in it, not by its
        full length (at least a second, so its first event is not a burst).

        >>> w = WindowStats(0.0, 60.0)
        >>> w.update([{"timestamp": t / 10, "latency_ms": 1.0} for t in range(150)])
        >>> w.throughput(watermark=15.0), w.throughput(watermark=75.0)
        (10.0, 2.5)
        """
        size = self.size_s if size_s is None else size_s
        if not size:
            return None
        elapsed = size if watermark is None else min(size, max(watermark - self.start, 1.0))
        return self.count / elapsed

    def summary(self, watermark: float | None = None) -> dict[str, Any]:
        """The figures an on-call engineer looks at first (``watermark``: the newest event time, for throughput)."""
        count = self.count
        latency = self.latency.summary()
        return {
            "start": self.start,
            "end": self.end,
            "count": count,
            "throughput_per_s": self.throughput(watermark),
            "errors": self.errors,
            "error_rate": self.errors / count if count else None,
            "errors_by_kind": dict(self.error_kinds),
            "first_event_time": self.first_event_time,
            "last_event_time": self.last_event_time,
            "latency_ms": {k: latency[k] for k in ("mean", "std", "min", "max") if k in latency}
            | {
                "p50": self.latency.sketch.quantile(0.5),
                "p95": self.latency.sketch.quantile(0.95),
                "p99": self.latency.sketch.quantile(0.99),
            },
            "confidence": _brief(self.confidence),
            "prediction": {
                "classes": self.prediction_classes.summary()["top"] if self.prediction_classes.count else [],
                "scores": _brief(self.prediction_scores),
            },
            "tokens_in": _brief(self.tokens_in),
            "tokens_out": _brief(self.tokens_out),
            "features": self.features.summary(),
            "features_untracked": self.features.untracked,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "start": self.start,
            "end": self.end,
            "count": self.count,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "latency": self.latency.to_dict(),
            "confidence": self.confidence.to_dict(),
            "prediction_classes": self.prediction_classes.to_dict(),
            "prediction_scores": self.prediction_scores.to_dict(),
            "tokens_in": self.tokens_in.to_dict(),
            "tokens_out": self.tokens_out.to_dict(),
            "features": self.features.to_dict(),
            "first_event_time": self.first_event_time,
            "last_event_time": self.last_event_time,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> WindowStats:
        """Rebuild from :meth:`to_dict` output."""
        out = cls(state["start"], state["end"])
        out.count, out.errors = state["count"], state["errors"]
        out.error_kinds = dict(state["error_kinds"])
        for name in ("latency", "confidence", "prediction_scores", "tokens_in", "tokens_out"):
            setattr(out, name, NumericStats.from_dict(state[name]))
        out.prediction_classes = CategoricalStats.from_dict(state["prediction_classes"])
        out.features = FeatureSet.from_dict(state["features"])
        out.first_event_time = state["first_event_time"]
        out.last_event_time = state["last_event_time"]
        return out


def _brief(stats: NumericStats) -> dict[str, Any] | None:
    present = stats.count - stats.missing
    if not present:
        return None
    return {
        "count": present,
        "mean": stats.moments.mean,
        "std": stats.moments.std,
        "min": stats.moments.min,
        "max": stats.moments.max,
        "p50": stats.sketch.quantile(0.5),
        "p95": stats.sketch.quantile(0.95),
    }

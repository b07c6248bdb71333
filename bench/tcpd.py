"""Real series with human-annotated change points (TCPD), scored as in its paper.

The six series river ships (``river.drift.datasets``), from the Turing Change
Point Dataset: G. J. J. van den Burg and C. K. I. Williams, "An Evaluation of
Change Point Detection Algorithms" (2020). Each series is sent through a
model monitor with the default configuration, one event per point, one
second apart, one feature per dimension; the firing drift, anomaly and data
quality alerts are the detected change points, placed at
``evidence.change_started_at`` where the detector tells and at ``event_time``
otherwise.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from river.drift import datasets

from stream.monitoring.model_monitor import ModelMonitor
from stream.settings import DetectionSettings

MARGIN = 5
# The best default-parameter method per series in the paper's Table (F1), and reporting no change.
PAPER_BEST_DEFAULT = {
    "apple": 0.594,
    "bitcoin": 0.692,
    "brent_spot": 0.607,
    "occupancy": 0.807,
    "run_log": 1.0,
    "uk_coal_employ": 0.639,
}


def series() -> dict[str, tuple[np.ndarray, dict[str, list[int]]]]:
    """name -> (values, one column per dimension; annotations per annotator), as the paper uses them."""
    out: dict[str, tuple[np.ndarray, dict[str, list[int]]]] = {}
    apple = datasets.Apple()
    # The annotators saw every third trading day (the crash of 2000-09-29 is their point 319).
    out["apple"] = (np.array([[y["Close"], y["Volume"]] for _, y in apple])[::3], apple.annotations)
    bitcoin = datasets.Bitcoin()
    out["bitcoin"] = (np.array([[y] for _, y in bitcoin], dtype=float), bitcoin.annotations)
    brent = datasets.BrentSpotPrice()
    rows = [y for x, y in brent if x["day"] >= dt.datetime(2000, 1, 1)][::10]
    out["brent_spot"] = (np.array(rows, dtype=float)[:, None], brent.annotations)
    occupancy = datasets.Occupancy()
    out["occupancy"] = (np.array([list(y.values()) for _, y in occupancy], dtype=float), occupancy.annotations)
    run_log = datasets.RunLog()
    out["run_log"] = (np.array([list(y.values()) for _, y in run_log], dtype=float), run_log.annotations)
    coal = datasets.UKCoalEmploy()
    out["uk_coal_employ"] = (
        np.array([[np.nan if y is None else float(y)] for _, y in coal], dtype=float),
        coal.annotations,
    )
    return out


def true_positives(truth: set[int], predicted: set[int], margin: int = MARGIN) -> set[int]:
    """Annotated points matched by a distinct prediction within ``margin`` (the paper's definition).

    >>> sorted(true_positives({10, 50}, {12, 49, 80}))
    [10, 50]
    """
    left = set(predicted)
    hits = set()
    for tau in sorted(truth):
        close = sorted((abs(tau - x), x) for x in left if abs(tau - x) <= margin)
        if close:
            hits.add(tau)
            left.remove(close[0][1])
    return hits


def f1(annotations: dict[str, list[int]], predicted: list[int], margin: int = MARGIN) -> float:
    """The paper's F1: precision against the union of annotators, recall averaged over them, 0 counted on both sides.

    >>> round(f1({"a": [30], "b": [30, 60]}, []), 3)   # reporting nothing
    0.571
    >>> round(f1({"a": [30], "b": [30, 60]}, [31, 58]), 3)
    1.0
    """
    per_annotator = [set(points) | {0} for points in annotations.values()]
    found = set(predicted) | {0}
    union = set().union(*per_annotator)
    precision = len(true_positives(union, found, margin)) / len(found)
    recall = sum(len(true_positives(t, found, margin)) / len(t) for t in per_annotator) / len(per_annotator)
    return 2 * precision * recall / (precision + recall)


def detect(values: np.ndarray, settings: DetectionSettings | None = None, batch: int = 10) -> list[dict[str, Any]]:
    """Firing drift, anomaly and data quality alerts of a default monitor fed ``values`` one event per second."""
    monitor = ModelMonitor("series", settings or DetectionSettings())
    t0 = 1_600_000_000.0
    events = []
    for i, row in enumerate(values):
        features = {f"x{j}": float(v) for j, v in enumerate(row) if not np.isnan(v)}
        events.append(
            {"model_version": "1", "timestamp": t0 + i, "latency_ms": 10.0, "error": None, "features": features}
        )
    alerts = []
    for start in range(0, len(events), batch):
        alerts += monitor.process(events[start : start + batch])
    return [a for a in alerts if a["status"] == "firing" and a["kind"] in ("drift", "anomaly", "data_quality")]


def change_points(alerts: list[dict[str, Any]], t0: float = 1_600_000_000.0) -> list[int]:
    """Alert positions in points: the detector's change start where it gives one, else when it fired."""
    points = set()
    for a in alerts:
        at = a["evidence"].get("change_started_at") or a["event_time"]
        points.add(round(at - t0))
    return sorted(points)


def evaluate(batch: int = 10) -> list[dict[str, Any]]:
    """Per series: F1 of the default monitor, of reporting no change, and the paper's best default method."""
    rows = []
    for name, (values, annotated) in series().items():
        alerts = detect(values, batch=batch)
        points = change_points(alerts)
        rows.append(
            {
                "series": name,
                "points": len(values),
                "alerts": len(alerts),
                "f1": round(f1(annotated, points), 3),
                "f1_no_change": round(f1(annotated, []), 3),
                "f1_paper_best_default": PAPER_BEST_DEFAULT[name],
                "detectors": sorted({a["detector"] for a in alerts}),
            }
        )
    return rows

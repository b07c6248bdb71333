"""Realistic traffic through a default model monitor: false alarms on stationary streams, delay on injected changes."""

from __future__ import annotations

import collections
import statistics
from typing import Any

from bench.realistic import CHANGES, RATE, events
from stream.monitoring.model_monitor import ModelMonitor
from stream.settings import DetectionSettings

WINDOW_EVENTS = int(60 * RATE)  # a 60 s tumbling window at the mean rate
CHANGE_AT = 60_000  # after the learnt reference: 300 s at up to 150 events/s
HORIZON = 12 * WINDOW_EVENTS
# A drift of one sd over an hour is watched for 40 minutes: no test can see its first minutes.
HORIZONS = {"slow drift over an hour": 40 * WINDOW_EVENTS}


def stationary(n: int, seed: int) -> dict[str, int]:
    """Firing alerts per detector of a default monitor on ``n`` stationary events."""
    monitor = ModelMonitor("real", DetectionSettings())
    counts: collections.Counter[str] = collections.Counter()
    for batch in events(n, seed):
        for alert in monitor.process(batch):
            if alert["status"] == "firing":
                counts[f"{alert['detector']} {alert['signal']}"] += 1
    return dict(counts)


def first_alert(change: str, seed: int) -> tuple[int | None, str | None]:
    """Events from the change to the first firing alert after it (None: missed within its horizon), and its detector."""
    monitor = ModelMonitor("real", DetectionSettings())
    seen = 0
    for batch in events(CHANGE_AT + HORIZONS.get(change, HORIZON), seed, change, CHANGE_AT):
        alerts = [a for a in monitor.process(batch) if a["status"] == "firing"]
        seen += len(batch)
        if seen > CHANGE_AT and alerts:
            return seen - CHANGE_AT, alerts[0]["detector"]
    return None, None


def injected(reps: int) -> list[dict[str, Any]]:
    """Delay (events and windows) and misses per injected change, over ``reps`` seeds."""
    rows = []
    for change, what in CHANGES.items():
        found = [first_alert(change, seed) for seed in range(reps)]
        delays = [d for d, _ in found if d is not None]
        rows.append(
            {
                "change": change,
                "what": what,
                "runs": reps,
                "missed": sum(d is None for d, _ in found),
                "delay_median": statistics.median(delays) if delays else None,
                "delay_windows": round(statistics.median(delays) / WINDOW_EVENTS, 2) if delays else None,
                "detectors": sorted({det for _, det in found if det}),
            }
        )
    return rows

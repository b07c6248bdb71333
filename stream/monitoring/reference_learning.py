"""Learning a version's reference from its first events, for a model nobody profiled.

The reference takes the first ``events`` events, and goes on until they span
``min_span_s`` of event time, so that it holds the signal's ordinary
variation from minute to minute rather than one snapshot of it. A batch may
complete it and go on past it: :meth:`ReferenceLearner.learn` says how many
events of the batch it took, and the rest are checked against it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from stream.monitoring.profiles import ReferenceProfile
from stream.stats import WindowStats
from stream.stats.columns import BatchColumns


class ReferenceLearner:
    """Statistics of a version's first events, until they are enough to be its reference.

    >>> learner = ReferenceLearner("m", "1", events=3, min_span_s=10.0)
    >>> ev = lambda t: {"timestamp": t, "latency_ms": 5.0, "error": None, "features": {"x": t}}
    >>> learner.learn([ev(0.0), ev(1.0), ev(2.0), ev(3.0)])
    (4, None)
    >>> used, profile = learner.learn([ev(9.0), ev(10.0), ev(11.0)])
    >>> used, profile.events, profile.source
    (2, 6, 'first_events')
    """

    def __init__(
        self,
        model: str,
        version: str,
        events: int,
        min_span_s: float,
        max_features: int = 200,
        max_categories: int = 100,
        stats: WindowStats | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.events = events
        self.min_span_s = min_span_s
        self.stats = stats or WindowStats(0.0, 0.0, max_features, max_categories)

    def learn(
        self, events: list[dict[str, Any]], kinds: dict[str, str] | None = None, columns: BatchColumns | None = None
    ) -> tuple[int, ReferenceProfile | None]:
        """Take what the reference still needs of ``events``; returns how many it took, and the reference once done.

        ``columns``, the events' columns when extracted already for the windows, are not extracted again.
        """
        if columns is None:
            columns = BatchColumns(events)
        room = self._room(events, columns)
        self.stats.update(events[:room], kinds=kinds, columns=columns.part(0, room))
        used = min(room, len(events))
        if room >= len(events) and not self._complete():
            return used, None
        stats = self.stats
        if stats.first_event_time is not None and stats.last_event_time is not None:
            stats.start, stats.end = stats.first_event_time, stats.last_event_time
        return used, ReferenceProfile(self.model, self.version, "first_events", time.time(), stats)

    def progress(self) -> dict[str, Any]:
        """How far the reference is: events so far, and what it needs."""
        return {"events": self.stats.count, "needed": self.events, "needed_s": self.min_span_s}

    def _complete(self) -> bool:
        first, last = self.stats.first_event_time, self.stats.last_event_time
        span = 0.0 if first is None or last is None else last - first
        return self.stats.count >= self.events and span >= self.min_span_s

    def _room(self, events: list[dict[str, Any]], columns: BatchColumns) -> int:
        """How many of ``events`` the reference still takes: until it has its events and its span of time."""
        by_count = max(self.events - self.stats.count, 0)
        if not events or by_count >= len(events):
            return len(events)
        first = self.stats.first_event_time if self.stats.first_event_time is not None else events[0]["timestamp"]
        spanned = np.flatnonzero(columns.field("timestamp") - first >= self.min_span_s)
        if not spanned.size:
            return len(events)
        return max(by_count, int(spanned[0]) + 1)

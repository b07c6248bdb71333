"""Event-time windows kept as plain state: tumbling and hopping views over panes.

Faust's windowed tables expire windows by the wall clock, so replayed or
delayed traffic would land in the wrong window. Here events
are placed by their own timestamps into *panes* (the greatest common divisor
of the tumbling size and the hopping step, one minute by default). A tumbling
window is the merge of its panes; a hopping window is the merge of the last
``hopping_s / pane`` panes. Every statistic merges exactly (the quantile
sketch within its stated error), so both views come from one set of panes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stream.stats.columns import BatchColumns
from stream.stats.window_stats import WindowStats, window_start


class EventTimeWindows:
    """Panes of event time with tumbling and hopping views and allowed lateness.

    The watermark is the newest event time seen. An event whose pane ended
    more than ``lateness_s`` before the watermark is counted in ``too_late``
    instead of being placed; one within the lateness is placed and counted in
    ``late``. Panes older than every view and the
    lateness are dropped, so memory does not grow with time.

    >>> w = EventTimeWindows(tumbling_s=60, hopping_s=600, hop_s=60, lateness_s=30)
    >>> placed = w.update([{"timestamp": t, "latency_ms": 1.0} for t in (0.0, 61.0, 125.0)])
    >>> w.tumbling().count, w.hopping().count, w.too_late
    (1, 3, 0)
    >>> placed = w.update([{"timestamp": 30.0, "latency_ms": 1.0}])  # [0, 60) closed at 90
    >>> placed, w.too_late
    ([], 1)
    >>> placed = w.update([{"timestamp": 100.0, "latency_ms": 1.0}])  # [60, 120) within lateness
    >>> len(placed), w.late
    (1, 1)
    """

    __slots__ = (
        "events",
        "feature_kinds",
        "feature_names",
        "hop_s",
        "hopping_s",
        "late",
        "lateness_s",
        "max_categories",
        "max_features",
        "pane_s",
        "panes",
        "too_late",
        "tumbling_s",
        "untracked_features",
        "untracked_names",
        "watermark",
    )

    def __init__(
        self,
        tumbling_s: float = 60.0,
        hopping_s: float = 600.0,
        hop_s: float = 60.0,
        lateness_s: float = 30.0,
        max_features: int = 200,
        max_categories: int = 100,
    ) -> None:
        for name, value in (("tumbling_s", tumbling_s), ("hopping_s", hopping_s), ("hop_s", hop_s)):
            if value <= 0 or value != int(value):
                raise ValueError(f"{name} must be a whole number of seconds above 0")
        if hopping_s % hop_s:
            raise ValueError("hopping_s must be a multiple of hop_s")
        if lateness_s < 0:
            raise ValueError("lateness_s must not be negative")
        self.tumbling_s = float(tumbling_s)
        self.hopping_s = float(hopping_s)
        self.hop_s = float(hop_s)
        self.pane_s = float(math.gcd(int(tumbling_s), int(hop_s)))
        self.lateness_s = float(lateness_s)
        self.max_features = max_features
        self.max_categories = max_categories
        self.panes: dict[float, WindowStats] = {}
        self.watermark: float | None = None
        self.too_late = 0
        self.late = 0
        self.events = 0
        # The first ``max_features`` feature names seen are tracked, in every pane.
        self.feature_names: dict[str, None] = {}
        # Each feature's kind, decided once for every pane (see fix_kinds).
        self.feature_kinds: dict[str, str] = {}
        self.untracked_features = 0
        self.untracked_names: list[str] = []

    def fix_kinds(self, kinds: dict[str, str]) -> None:
        """Take features' kinds from the reference: from now on a value of the other kind is ``wrong_type``."""
        self.feature_kinds.update(kinds)

    def _track(self, names_seen: dict[str, None]) -> None:
        """Track the batch's new feature names (``names_seen``, in order of first appearance) while there is room."""
        names = self.feature_names
        for name in names_seen:
            if name in names or name in self.untracked_names:
                continue
            if len(names) < self.max_features:
                names[name] = None
            elif len(self.untracked_names) < 1000:
                self.untracked_names.append(name)
                self.untracked_features += 1

    def update(self, events: list[dict[str, Any]], columns: BatchColumns | None = None) -> list[dict[str, Any]]:
        """Place a batch by event time; return the events that were placed.

        ``columns``, the batch's columns, are shared with the panes that take a run of it.
        """
        if not events:
            return []
        if columns is None:
            columns = BatchColumns(events)
        stamps = columns.field("timestamp")
        # Lateness is judged against the watermark before this batch: events
        # that arrive together are not late relative to each other.
        previous = self.watermark
        cutoff = -math.inf if previous is None else previous - self.lateness_s
        newest = float(stamps.max())
        if previous is None or newest > previous:
            self.watermark = newest
        pane_s = self.pane_s
        starts = np.floor(stamps / pane_s) * pane_s
        ends = starts + pane_s
        kept = ends > cutoff
        self.too_late += int(len(events) - np.count_nonzero(kept))
        if previous is not None:
            self.late += int(np.count_nonzero(kept & (ends <= previous)))
        if not kept.any():
            self._expire()
            return []
        if kept.all():
            placed, placed_columns, placed_starts = events, columns, starts
        else:
            at = np.flatnonzero(kept)
            placed = [events[i] for i in at.tolist()]
            placed_columns, placed_starts = BatchColumns(placed), starts[at]
        self._track(placed_columns.feature_names())
        # Events in time order fall in runs of one pane each; each run takes its part of the columns.
        cuts = np.flatnonzero(placed_starts[1:] != placed_starts[:-1]) + 1
        bounds = [0, *cuts.tolist(), len(placed)]
        runs: dict[float, list[tuple[int, int]]] = {}
        for lo, hi, start in zip(bounds[:-1], bounds[1:], placed_starts[bounds[:-1]].tolist(), strict=True):
            runs.setdefault(start, []).append((lo, hi))
        for start, spans in runs.items():
            pane = self.panes.get(start)
            if pane is None:
                pane = self.panes[start] = WindowStats(start, start + pane_s, self.max_features, self.max_categories)
            if len(spans) == 1:
                lo, hi = spans[0]
                pane.update(placed[lo:hi], self.feature_names, self.feature_kinds, placed_columns.part(lo, hi))
            else:
                pane.update([e for lo, hi in spans for e in placed[lo:hi]], self.feature_names, self.feature_kinds)
        self.events += len(placed)
        self._expire()
        # The same list when nothing came too late, so callers can share work on it.
        return placed

    def _expire(self) -> None:
        wm = self.watermark
        assert wm is not None
        # A pane is kept while a view still covers it or late events may still reach it.
        view_from = min(
            window_start(wm, self.hop_s) + self.hop_s - self.hopping_s,
            window_start(wm, self.tumbling_s),
        )
        open_after = wm - self.lateness_s
        for start in [s for s in self.panes if s < view_from and s + self.pane_s <= open_after]:
            del self.panes[start]

    def _merged(self, start: float, end: float) -> WindowStats:
        """The window [start, end); read it, do not change it (it may be a pane itself)."""
        if end - start == self.pane_s and start in self.panes:
            # The usual tumbling window is one pane: no copy on every batch.
            return self.panes[start]
        out = WindowStats(start, end, self.max_features, self.max_categories)
        for pane_start in sorted(self.panes):
            if start <= pane_start < end:
                out = out.merge(self.panes[pane_start])
        out.start, out.end = start, end
        return out

    def tumbling(self, at: float | None = None) -> WindowStats:
        """The tumbling window holding event time ``at`` (default: the watermark); read-only."""
        at = self.watermark if at is None else at
        if at is None:
            return WindowStats(0.0, self.tumbling_s)
        start = window_start(at, self.tumbling_s)
        return self._merged(start, start + self.tumbling_s)

    def hopping(self, at: float | None = None) -> WindowStats:
        """The hopping window ending with the hop that holds ``at`` (default: the watermark)."""
        at = self.watermark if at is None else at
        if at is None:
            return WindowStats(0.0, self.hopping_s)
        end = window_start(at, self.hop_s) + self.hop_s
        return self._merged(end - self.hopping_s, end)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "tumbling_s": self.tumbling_s,
            "hopping_s": self.hopping_s,
            "hop_s": self.hop_s,
            "lateness_s": self.lateness_s,
            "max_features": self.max_features,
            "max_categories": self.max_categories,
            "watermark": self.watermark,
            "too_late": self.too_late,
            "late": self.late,
            "events": self.events,
            "feature_names": list(self.feature_names),
            "feature_kinds": dict(self.feature_kinds),
            "untracked_features": self.untracked_features,
            "untracked_names": list(self.untracked_names),
            "panes": [pane.to_dict() for _, pane in sorted(self.panes.items())],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> EventTimeWindows:
        """Rebuild from :meth:`to_dict` output."""
        out = cls(
            state["tumbling_s"],
            state["hopping_s"],
            state["hop_s"],
            state["lateness_s"],
            state["max_features"],
            state["max_categories"],
        )
        out.watermark = state["watermark"]
        out.too_late, out.late, out.events = state["too_late"], state["late"], state["events"]
        out.feature_names = dict.fromkeys(state["feature_names"])
        out.untracked_features = state["untracked_features"]
        out.untracked_names = list(state["untracked_names"])
        out.panes = {p["start"]: WindowStats.from_dict(p) for p in state["panes"]}
        out.feature_kinds = dict(state["feature_kinds"])
        return out

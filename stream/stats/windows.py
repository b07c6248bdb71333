"""Event-time tumbling windows kept as plain state.

Faust's windowed tables expire windows by the wall clock, so replayed or
delayed traffic would land in the wrong window (see DESIGN.md). Here a
window is chosen by the event's own timestamp, and the state is an ordinary
object that an agent stores in an ordinary table.
"""

from __future__ import annotations

import math
from typing import Any

from stream.stats.moments import RunningMoments


def window_start(timestamp: float, size_s: float) -> float:
    """Start of the tumbling window of ``size_s`` seconds holding ``timestamp``.

    >>> window_start(125.0, 60)
    120.0
    """
    return float(math.floor(timestamp / size_s) * size_s)


class LatencyWindow:
    """Latency and error counts of one model version in one window.

    >>> w = LatencyWindow(start=0.0, size_s=60)
    >>> w.update(10.0, error=False); w.update(30.0, error=True)
    >>> w.summary()["latency_ms"]["mean"], w.summary()["error_rate"]
    (20.0, 0.5)
    """

    __slots__ = ("errors", "latency", "size_s", "start")

    def __init__(self, start: float, size_s: float) -> None:
        self.start = start
        self.size_s = size_s
        self.latency = RunningMoments()
        self.errors = 0

    @property
    def end(self) -> float:
        """Exclusive end of the window."""
        return self.start + self.size_s

    @property
    def count(self) -> int:
        """Events in the window."""
        return self.latency.count

    def update(self, latency_ms: float, error: bool) -> None:
        """Add one event."""
        self.latency.update(latency_ms)
        if error:
            self.errors += 1

    def summary(self) -> dict[str, Any]:
        """What an operator reads: counts, rates and latency moments."""
        count = self.count
        return {
            "start": self.start,
            "end": self.end,
            "count": count,
            "throughput_per_s": count / self.size_s,
            "errors": self.errors,
            "error_rate": self.errors / count if count else None,
            "latency_ms": self.latency.summary(),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "start": self.start,
            "size_s": self.size_s,
            "errors": self.errors,
            "latency": self.latency.to_dict(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LatencyWindow:
        """Rebuild from :meth:`to_dict` output."""
        out = cls(state["start"], state["size_s"])
        out.errors = state["errors"]
        out.latency = RunningMoments.from_dict(state["latency"])
        return out


class TumblingWindows:
    """The most recent ``keep`` tumbling windows of one stream, by event time.

    An event older than the oldest kept window cannot be placed and is
    counted in ``too_late`` rather than silently folded into a newer window.

    >>> tw = TumblingWindows(size_s=60, keep=2)
    >>> for ts in (0, 61, 130, 5):
    ...     _ = tw.update(ts, latency_ms=1.0, error=False)
    >>> [w.start for w in tw.windows], tw.too_late
    ([60.0, 120.0], 1)
    """

    __slots__ = ("keep", "size_s", "too_late", "windows")

    def __init__(self, size_s: float, keep: int = 3) -> None:
        if size_s <= 0:
            raise ValueError("size_s must be positive")
        self.size_s = size_s
        self.keep = keep
        self.windows: list[LatencyWindow] = []
        self.too_late = 0

    def update(self, timestamp: float, latency_ms: float, error: bool) -> LatencyWindow | None:
        """Place one event; return its window, or None if it came too late."""
        start = window_start(timestamp, self.size_s)
        windows = self.windows
        if windows and windows[-1].start == start:
            window = windows[-1]
        else:
            window = self._find_or_open(start)
            if window is None:
                self.too_late += 1
                return None
        window.update(latency_ms, error)
        return window

    def _find_or_open(self, start: float) -> LatencyWindow | None:
        for window in self.windows:
            if window.start == start:
                return window
        if self.windows and start < self.windows[0].start and len(self.windows) >= self.keep:
            return None
        window = LatencyWindow(start, self.size_s)
        self.windows.append(window)
        self.windows.sort(key=lambda w: w.start)
        del self.windows[: -self.keep]
        return window if window in self.windows else None

    @property
    def current(self) -> LatencyWindow | None:
        """The newest window, if any."""
        return self.windows[-1] if self.windows else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "size_s": self.size_s,
            "keep": self.keep,
            "too_late": self.too_late,
            "windows": [w.to_dict() for w in self.windows],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TumblingWindows:
        """Rebuild from :meth:`to_dict` output."""
        out = cls(state["size_s"], state["keep"])
        out.too_late = state["too_late"]
        out.windows = [LatencyWindow.from_dict(w) for w in state["windows"]]
        return out

"""Host resources reported with events: limits about to be hit, and slow memory leaks.

``ResourceRule`` reads the ``resources`` object of each event. Memory above
``memory_share`` of its limit, or CPU above ``cpu_percent`` on average over a
window, fires at once. A leak is caught earlier, from the trend: memory
averaged per ``bucket_s`` of event time, a least-squares line through the
last ``buckets`` averages, and a finding when memory grows steadily (the
slope at least ``min_t`` standard errors above zero) and the line reaches the
limit within ``horizon_s``.
"""

from __future__ import annotations

import math
from typing import Any

from stream.detectors.base import Finding, check_state_version, tumbling_window
from stream.stats.columns import BatchColumns
from stream.stats.window_stats import window_start

# The layout of to_dict; a state without a version has this layout too (see check_state_version).
STATE_VERSION = 1


def trend(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of ``(time, value)`` points and its t-statistic.

    >>> slope, t = trend([(0, 1.0), (10, 2.0), (20, 3.1), (30, 3.9)])
    >>> round(slope, 3), t > 10
    (0.098, True)
    """
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if n < 3 or sxx == 0:
        return 0.0, 0.0
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in points) / (n - 2)
    se = math.sqrt(residual / sxx)
    return slope, (slope / se if se > 0 else math.inf if slope > 0 else 0.0)


class ResourceRule:
    """Memory and CPU of the serving host, from the events' ``resources``.

    >>> rule = ResourceRule(window_s=60, bucket_s=5, buckets=12, min_points=6)
    >>> ev = lambda t, mb: {"timestamp": t, "resources": {"memory_mb": mb, "memory_limit_mb": 2048.0}}
    >>> found = rule.update([ev(t, 1000.0 + t * 0.5) for t in range(0, 60)])   # +0.5 MB/s, far from the limit
    >>> [(f.signal, f.detector, f.evidence["minutes_to_limit"] < 60) for f in found]
    [('resources.memory_mb', 'memory_leak', True)]
    """

    name = "resources"

    def __init__(
        self,
        window_s: float = 60.0,
        *,
        memory_share: float = 0.9,
        cpu_percent: float = 95.0,
        bucket_s: float = 10.0,
        buckets: int = 60,
        min_points: int = 12,
        min_t: float = 6.0,
        horizon_s: float = 3600.0,
    ) -> None:
        self.window_s = window_s
        self.memory_share = memory_share
        self.cpu_percent = cpu_percent
        self.bucket_s = bucket_s
        self.buckets = buckets
        self.min_points = min_points
        self.min_t = min_t
        self.horizon_s = horizon_s
        self.series: list[list[float]] = []  # [bucket start, sum of memory, count]
        self.limit_mb: float | None = None
        self.window_start: float | None = None
        self.fired: list[str] = []
        self.cpu_sum = 0.0
        self.cpu_n = 0

    def update(self, events: list[dict[str, Any]], columns: BatchColumns | None = None) -> list[Finding]:
        """Add the resources of ``events``; return findings (each at most once per window)."""
        out: list[Finding] = []
        for event in [e for e in events if "resources" in e]:
            resources = event["resources"]
            if not isinstance(resources, dict):
                continue
            ts = event["timestamp"]
            start = window_start(ts, self.window_s)
            if self.window_start is None or start > self.window_start:
                self.window_start, self.fired, self.cpu_sum, self.cpu_n = start, [], 0.0, 0
            if isinstance(limit := resources.get("memory_limit_mb"), int | float) and limit > 0:
                self.limit_mb = float(limit)
            memory = resources.get("memory_mb")
            if isinstance(memory, int | float):
                self._add(ts, float(memory))
                out += self._memory(ts, float(memory))
            cpu = resources.get("cpu_percent")
            if isinstance(cpu, int | float):
                self.cpu_sum += cpu
                self.cpu_n += 1
                out += self._cpu(ts)
        return out

    def _add(self, ts: float, memory: float) -> None:
        bucket = math.floor(ts / self.bucket_s) * self.bucket_s
        if self.series and self.series[-1][0] == bucket:
            self.series[-1][1] += memory
            self.series[-1][2] += 1
        elif not self.series or bucket > self.series[-1][0]:
            self.series.append([bucket, memory, 1])
            del self.series[: -self.buckets]

    def _finding(
        self,
        ts: float,
        signal: str,
        detector: str,
        severity: str,
        value: float,
        threshold: float,
        baseline: dict[str, Any],
        message: str,
        evidence: dict[str, Any],
    ) -> Finding:
        assert self.window_start is not None
        self.fired.append(detector)
        window = tumbling_window(self.window_start, self.window_s)
        return Finding(
            signal, detector, "resource", severity, value, threshold, baseline, message, ts, window, evidence
        )

    def _memory(self, ts: float, memory: float) -> list[Finding]:
        out = []
        limit = self.limit_mb
        if limit and "memory_limit" not in self.fired and memory >= self.memory_share * limit:
            out.append(
                self._finding(
                    ts,
                    "resources.memory_mb",
                    "memory_limit",
                    "critical",
                    memory,
                    self.memory_share * limit,
                    {"limit_mb": limit},
                    f"memory at {memory:.0f} MB, {memory / limit:.0%} of its {limit:.0f} MB limit "
                    f"(alert above {self.memory_share:.0%}).",
                    {"memory_mb": memory, "limit_mb": limit},
                )
            )
        if "memory_leak" in self.fired or len(self.series) < self.min_points:
            return out
        points = [(b + self.bucket_s / 2, s / n) for b, s, n in self.series]
        slope, t = trend(points)
        if slope <= 0 or t < self.min_t:
            return out
        first, last = points[0][1], points[-1][1]
        if limit:
            seconds_left = (limit - last) / slope
            if seconds_left > self.horizon_s or seconds_left <= 0:
                return out
        elif last < first * 1.25:
            return out  # no limit to aim at: only a clear relative growth counts
        evidence = {
            "slope_mb_per_min": round(slope * 60, 3),
            "t_statistic": round(t, 1),
            "from_mb": round(first, 1),
            "to_mb": round(last, 1),
            "over_minutes": round((points[-1][0] - points[0][0]) / 60, 1),
            "limit_mb": limit,
            "minutes_to_limit": round(seconds_left / 60, 1) if limit else None,
        }
        reach = f"; the {limit:.0f} MB limit is reached in about {_duration(seconds_left)}" if limit else ""
        out.append(
            self._finding(
                ts,
                "resources.memory_mb",
                "memory_leak",
                "warning",
                slope * 60,
                0.0,
                {"from_mb": round(first, 1)},
                f"memory grows steadily by {slope * 60:.1f} MB/min ({first:.0f} -> {last:.0f} MB over "
                f"{evidence['over_minutes']} min){reach}.",
                evidence,
            )
        )
        return out

    def _cpu(self, ts: float) -> list[Finding]:
        if "cpu_high" in self.fired or self.cpu_n < 20:
            return []
        mean = self.cpu_sum / self.cpu_n
        if mean < self.cpu_percent:
            return []
        return [
            self._finding(
                ts,
                "resources.cpu_percent",
                "cpu_high",
                "warning",
                mean,
                self.cpu_percent,
                {},
                f"CPU averaged {mean:.0f}% over {self.cpu_n} requests this window "
                f"(alert above {self.cpu_percent:.0f}%).",
                {"cpu_percent_mean": round(mean, 1), "samples": self.cpu_n},
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "state_version": STATE_VERSION,
            "series": self.series,
            "limit_mb": self.limit_mb,
            "window_start": self.window_start,
            "fired": self.fired,
            "cpu_sum": self.cpu_sum,
            "cpu_n": self.cpu_n,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        check_state_version(state, STATE_VERSION, "resources")
        self.series = [list(p) for p in state["series"]]
        self.limit_mb, self.window_start = state["limit_mb"], state["window_start"]
        self.fired = list(state["fired"])
        self.cpu_sum, self.cpu_n = state["cpu_sum"], state["cpu_n"]


def _duration(seconds: float) -> str:
    """A rough duration for a message: seconds under two minutes, minutes under two hours, then hours.

    >>> _duration(25), _duration(90), _duration(1800), _duration(9000)
    ('25 s', '90 s', '30 min', '2.5 h')
    """
    if seconds < 120:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

"""What the live status page shows of a model: health at a glance, the last windows, firing alerts.

Pure functions over :class:`~stream.monitoring.model_monitor.ModelMonitor`; the web module
serves them as ``/api/status`` and the page draws them.
"""

from __future__ import annotations

import math
from typing import Any

from stream.monitoring.model_monitor import ModelMonitor
from stream.monitoring.version_monitor import VersionMonitor
from stream.privacy.noise import SliceNoise, private_segments
from stream.stats import WindowStats

SEVERITY_ORDER = {"info": 1, "warning": 2, "critical": 3}
# A model's health when no record has arrived for longer than its silence threshold.
SILENT = "silent"


def health(active: list[dict[str, Any]]) -> str:
    """``ok`` without firing alerts, else the worst severity firing.

    >>> health([]), health([{"severity": "warning"}, {"severity": "critical"}])
    ('ok', 'critical')
    """
    if not active:
        return "ok"
    return max((a["severity"] for a in active), key=lambda s: SEVERITY_ORDER.get(s, 0))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class DriftCache:
    """Worst-drift results of windows already scored, reused while the window has not changed.

    Scoring a window against the reference costs about half a millisecond per
    input; a closed window never changes, so a page that redraws every few
    seconds scores only the window that is still filling.
    """

    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self.entries: dict[tuple[str, str, float], tuple[int, float | None, str | None]] = {}

    def worst(self, vm: VersionMonitor, window: WindowStats) -> tuple[float | None, str | None]:
        """The highest PSI of ``window`` against the reference and the input it belongs to."""
        if vm.drift is None or window.count < vm.drift.min_events:
            return None, None
        key = (vm.model, vm.version, window.start)
        cached = self.entries.get(key)
        if cached is not None and cached[0] == window.count:
            return cached[1], cached[2]
        scores = vm.drift.scores(window)
        top = max(scores, key=lambda s: s["psi"]) if scores else None
        result = (_finite(top["psi"]), top["feature"]) if top else (None, None)
        if len(self.entries) >= self.max_entries:
            self.entries.clear()
        self.entries[key] = (window.count, *result)
        return result


def window_figures(window: WindowStats, size_s: float, watermark: float | None = None) -> dict[str, Any]:
    """A window's health at a glance: events, latency quantiles (ms), error rate, throughput.

    Throughput counts the time elapsed in the window by ``watermark`` (see :meth:`WindowStats.throughput`).

    >>> from stream.stats import WindowStats
    >>> w = WindowStats(0.0, 60.0)
    >>> w.update([{"timestamp": t, "latency_ms": 10.0 * t} for t in (1.0, 2.0, 3.0)] + [{"timestamp": 4.0,
    ...           "latency_ms": 40.0, "error": "timeout"}])
    >>> f = window_figures(w, 60.0)
    >>> f["count"], f["error_rate"], round(f["p50"]), f["throughput_per_s"] * 60
    (4, 0.25, 20, 4.0)
    >>> window_figures(w, 60.0, watermark=4.0)["throughput_per_s"]
    1.0
    """
    count = window.count
    p50, p95, p99 = window.latency.sketch.table().quantiles((0.5, 0.95, 0.99)).tolist() if count else (None,) * 3
    return {
        "start": window.start,
        "size_s": size_s,
        "count": count,
        "p50": _finite(p50),
        "p95": _finite(p95),
        "p99": _finite(p99),
        "error_rate": window.errors / count if count else None,
        "throughput_per_s": window.throughput(watermark, size_s),
    }


def window_point(window: WindowStats, vm: VersionMonitor, size_s: float, drift: DriftCache) -> dict[str, Any]:
    """One window's figures for the charts, with its worst drift (PSI) and the input it belongs to."""
    psi_max, psi_top = drift.worst(vm, window)
    figures = window_figures(window, size_s, vm.windows.watermark)
    return {**figures, "psi_max": psi_max, "psi_top": psi_top}


def version_status(
    vm: VersionMonitor, drift: DriftCache, max_points: int = 10, noise: SliceNoise | None = None
) -> dict[str, Any]:
    """One model version: health, the current window, the last windows as series, its firing alerts."""
    lifecycles = [vm.lifecycle, vm.performance_lifecycle, *(s.lifecycle for s in vm.segments.segments.values())]
    active = [state["alert"] for life in lifecycles for state in life.active.values()]
    panes = sorted(vm.windows.panes.items())[-max_points:]
    current = vm.windows.tumbling()
    return {
        "model_version": vm.version,
        "health": health(active),
        "events": vm.events,
        "last_event_time": vm.windows.watermark,
        "current": window_point(current, vm, vm.detection.window_s, drift),
        "series": [window_point(pane, vm, vm.windows.pane_s, drift) for _, pane in panes],
        "firing": sorted(active, key=lambda a: a["event_time"], reverse=True),
        "incidents": incidents(active),
        "performance": vm.performance.summary().get("metrics") or {},
        "estimated_performance": vm.estimated.summary()["estimated"] if vm.estimated is not None else {},
        "segments": segment_rows(vm, noise),
    }


def segment_rows(vm: VersionMonitor, noise: SliceNoise | None = None) -> list[dict[str, Any]]:
    """The version's segments for the live page: events, p95, error rate and what fires; small slices left out."""
    rows = []
    segments = private_segments(vm.segments.summary(), f"{vm.model}/{vm.version}", noise)
    for name, seg in sorted(segments.items()):
        if seg.get("suppressed"):
            continue
        window = seg["window"]
        rows.append(
            {
                "segment": name,
                "events": window["count"],
                "p95": (window.get("latency_ms") or {}).get("p95"),
                "error_rate": window["error_rate"],
                "firing": seg["firing"],
            }
        )
    return rows


def incidents(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts grouped by incident, newest first: one entry per episode, whatever number of detectors agree.

    ``now`` is ``resolved`` once every detector that fired has resolved; ``alerts`` counts the messages.

    >>> alert = lambda detector, severity, t, status="firing": {"incident": "i1", "fingerprint": detector,
    ...     "model": "m", "signal": "x", "detector": detector, "severity": severity, "status": status,
    ...     "event_time": t, "message": f"{detector} at {t:g}", "evidence": {"incident": {"since": 1.0}}}
    >>> rows = incidents([alert("cusum", "warning", 5.0), alert("level_shift", "critical", 3.0)])
    >>> [(r["signal"], r["severity"], r["detectors"], r["message"], r["now"]) for r in rows]
    [('x', 'critical', ['cusum', 'level_shift'], 'cusum at 5', 'firing')]
    >>> incidents([alert("cusum", "warning", 5.0), alert("cusum", "warning", 9.0, "resolved")])[0]["now"]
    'resolved'
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        groups.setdefault(alert.get("incident") or alert["fingerprint"], []).append(alert)
    out = []
    for key, group in groups.items():
        latest = max(group, key=lambda a: a["event_time"])
        firing = {a["fingerprint"] for a in group if a["status"] == "firing"}
        resolved = {a["fingerprint"] for a in group if a["status"] == "resolved"}
        out.append(
            {
                "incident": key,
                "model": latest["model"],
                "signal": latest["signal"],
                "segment": latest.get("segment"),
                "severity": health(group),
                "detectors": sorted({a["detector"] for a in group}),
                "since": min(a["evidence"].get("incident", {}).get("since", a["event_time"]) for a in group),
                "last_event_time": latest["event_time"],
                "message": latest["message"],
                "now": "resolved" if firing <= resolved else "firing",
                "alerts": len(group),
            }
        )
    return sorted(out, key=lambda r: r["last_event_time"], reverse=True)


def model_status(monitor: ModelMonitor, drift: DriftCache, noise: SliceNoise | None = None) -> dict[str, Any]:
    """Every version of a model, worst health first in ``health``."""
    versions = [version_status(vm, drift, noise=noise) for vm in monitor.versions.values()]
    traffic = monitor.traffic_status()
    silence = [state["alert"] for state in monitor.traffic_lifecycle.active.values()]
    for version in versions:
        version["traffic"] = traffic
        if traffic["silent"]:
            # Its alerts describe the last traffic, not now: listed, but not as its current health.
            version["stale"] = True
            version["health"] = SILENT
    return {
        "model": monitor.model,
        "health": SILENT
        if traffic["silent"]
        else health([{"severity": v["health"]} for v in versions if v["health"] != "ok"]),
        "traffic": traffic,
        "silence": silence,
        "versions": versions,
    }

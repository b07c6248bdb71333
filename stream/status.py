"""What the live status page shows of a model: health at a glance, the last windows, firing alerts.

Pure functions over :class:`~stream.monitor.ModelMonitor`; the web module
serves them as ``/api/status`` and the page draws them.
"""

from __future__ import annotations

import math
from typing import Any

from stream.monitor import ModelMonitor, VersionMonitor
from stream.stats import WindowStats

SEVERITY_ORDER = {"info": 1, "warning": 2, "critical": 3}


def health(active: list[dict[str, Any]]) -> str:
    """``ok`` without firing alerts, else the worst severity firing.

    >>> health([]), health([{"severity": "warning"}, {"severity": "critical"}])
    ('ok', 'critical')
    """
    if not active:
        return "ok"
    return max((a["severity"] for a in active), key=lambda s: SEVERITY_ORDER.get(s, 0))


def _finite(value: float | None, scale: float = 1.0) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return value * scale


def window_point(window: WindowStats, vm: VersionMonitor, size_s: float) -> dict[str, Any]:
    """One window's figures for the charts: latency quantiles (ms), error rate, throughput, worst drift (PSI)."""
    count = window.count
    sketch = window.latency.sketch
    point: dict[str, Any] = {
        "start": window.start,
        "size_s": size_s,
        "count": count,
        "p50": _finite(sketch.quantile(0.5)) if count else None,
        "p95": _finite(sketch.quantile(0.95)) if count else None,
        "p99": _finite(sketch.quantile(0.99)) if count else None,
        "error_rate": window.errors / count if count else None,
        "throughput_per_s": count / size_s,
        "psi_max": None,
        "psi_top": None,
    }
    if vm.drift is not None and count >= vm.drift.min_events:
        scores = vm.drift.scores(window)
        if scores:
            top = max(scores, key=lambda s: s["psi"])
            point["psi_max"], point["psi_top"] = _finite(top["psi"]), top["feature"]
    return point


def version_status(vm: VersionMonitor, max_points: int = 10) -> dict[str, Any]:
    """One model version: health, the current window, the last windows as series, its firing alerts."""
    active = [state["alert"] for state in (*vm.lifecycle.active.values(), *vm.performance_lifecycle.active.values())]
    panes = sorted(vm.windows.panes.items())[-max_points:]
    current = vm.windows.tumbling()
    return {
        "model_version": vm.version,
        "health": health(active),
        "events": vm.events,
        "last_event_time": vm.windows.watermark,
        "current": window_point(current, vm, vm.settings.window_s),
        "series": [window_point(pane, vm, vm.windows.pane_s) for _, pane in panes],
        "firing": sorted(active, key=lambda a: a["event_time"], reverse=True),
        "performance": vm.performance.summary().get("metrics") or {},
    }


def model_status(monitor: ModelMonitor) -> dict[str, Any]:
    """Every version of a model, worst health first in ``health``."""
    versions = [version_status(vm) for vm in monitor.versions.values()]
    return {
        "model": monitor.model,
        "health": health([{"severity": v["health"]} for v in versions if v["health"] != "ok"]),
        "versions": versions,
    }

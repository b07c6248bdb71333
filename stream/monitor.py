"""Per-model monitoring state: windows and detectors for every version.

This is the business logic behind the ingest agent. It holds no I/O: feed it
a model's decoded events, get alert messages back, and store
:meth:`ModelMonitor.to_dict` wherever the state must survive (a Faust table).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stream.alerts import build_alert
from stream.config import Settings
from stream.detectors import ZScoreRule
from stream.stats import TumblingWindows


class VersionMonitor:
    """Windows and detectors of one model version."""

    __slots__ = ("events", "last_event_time", "latency_rule", "windows")

    def __init__(self, settings: Settings) -> None:
        self.windows = TumblingWindows(settings.window_s, keep=3)
        self.latency_rule = ZScoreRule(
            "latency_ms",
            threshold=settings.zscore_threshold,
            warmup=settings.zscore_warmup,
            min_outliers=settings.zscore_min_outliers,
            window_s=settings.window_s,
        )
        self.events = 0
        self.last_event_time: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "events": self.events,
            "last_event_time": self.last_event_time,
            "windows": self.windows.to_dict(),
            "latency_rule": self.latency_rule.to_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        self.events = state["events"]
        self.last_event_time = state["last_event_time"]
        self.windows = TumblingWindows.from_dict(state["windows"])
        self.latency_rule.load_state(state["latency_rule"])


class ModelMonitor:
    """Everything watched for one model, split by model version.

    >>> from stream.config import Settings
    >>> mon = ModelMonitor("m", Settings(zscore_warmup=20, zscore_min_outliers=2))
    >>> ev = lambda i, lat: {"model_version": "1", "timestamp": 100.0 + i,
    ...                      "latency_ms": lat, "error": None}
    >>> mon.process([ev(i, 10.0 + i % 3) for i in range(40)])
    []
    >>> alerts = mon.process([ev(41, 500.0), ev(42, 480.0)])
    >>> alerts[0]["signal"], alerts[0]["status"], mon.versions["1"].events
    ('latency_ms', 'firing', 42)
    """

    def __init__(self, model: str, settings: Settings) -> None:
        self.model = model
        self.settings = settings
        self.versions: dict[str, VersionMonitor] = {}
        self.seq = 0

    def process(self, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Update windows and detectors with ``events``; return alert messages."""
        by_version: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_version.setdefault(event["model_version"], []).append(event)
        alerts: list[dict[str, Any]] = []
        for version, batch in by_version.items():
            state = self.versions.get(version)
            if state is None:
                state = self.versions[version] = VersionMonitor(self.settings)
            latencies = [e["latency_ms"] for e in batch]
            times = [e["timestamp"] for e in batch]
            for e in batch:
                state.windows.update(e["timestamp"], e["latency_ms"], bool(e.get("error")))
            state.events += len(batch)
            newest = max(times)
            if state.last_event_time is None or newest > state.last_event_time:
                state.last_event_time = newest
            for finding in state.latency_rule.update(latencies, times):
                alerts.append(build_alert(finding, self.model, version))
        self.seq += 1
        return alerts

    def summary(self) -> dict[str, Any]:
        """What an operator reads about this model, per version."""
        return {
            "model": self.model,
            "versions": {
                version: {
                    "events": v.events,
                    "last_event_time": v.last_event_time,
                    "too_late": v.windows.too_late,
                    "current_window": v.windows.current.summary() if v.windows.current else None,
                    "latency_baseline": v.latency_rule.baseline(),
                }
                for version, v in self.versions.items()
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state for the model's table entry."""
        return {
            "seq": self.seq,
            "versions": {version: v.to_dict() for version, v in self.versions.items()},
        }

    @classmethod
    def from_dict(cls, model: str, settings: Settings, state: dict[str, Any]) -> ModelMonitor:
        """Rebuild from :meth:`to_dict` output with the current settings."""
        out = cls(model, settings)
        out.seq = state["seq"]
        for version, vstate in state["versions"].items():
            vm = VersionMonitor(settings)
            vm.load_state(vstate)
            out.versions[version] = vm
        return out

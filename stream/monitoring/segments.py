"""One model version's traffic split by segment: window statistics, health detectors, and who drives a change.

Events carry an optional ``segment`` (a region, a tenant, a channel). Each
segment of a version gets its own tumbling window statistics (latency, error
rate, prediction and confidence distributions; no features), its own
latency and error-rate detectors with their own alert lifecycle (alerts with
a top-level ``segment``), its realised accuracy once labels come and its
estimated accuracy before, from the version's calibrated confidence.

Cardinality is bounded: ``max_segments`` segments are watched one by one;
a segment seen later pools into ``other`` unless it outgrows the lightest
watched one (counted in a frequent-items sketch), which it then replaces.

:meth:`SegmentMonitor.drivers` says which segments drive a model-wide
change: each segment's share of the excess of the current window over its
usual level (events x (now - usual)), for latency, error rate and
confidence. Segments with fewer than ``min_slice_events`` events in the
window are left out there and suppressed in :meth:`SegmentMonitor.summary`:
a small slice's aggregate describes a few people.

Pure domain: no I/O.
"""

from __future__ import annotations

import base64
from collections import deque
from typing import Any

import datasketches
import numpy as np

from stream.detectors.cbpe import estimate
from stream.monitoring.alert_lifecycle import lifecycle
from stream.monitoring.monitor_file import ModelMonitors, build_signal_rules
from stream.settings import DetectionSettings
from stream.stats import EventTimeWindows
from stream.stats.calibration import ConfidenceCalibration

OTHER_SEGMENTS = "other"
# The signals each segment's own detectors watch.
SEGMENT_SIGNALS = ("latency_ms", "error_rate")
# Baselines average this many closed windows at most.
BASELINE_WINDOWS = 10
# A pooled segment replaces the lightest watched one once it has this many times its events.
REPLACE_FACTOR = 2
STATE_VERSION = 1


def _estimated(bins: np.ndarray, right: np.ndarray) -> dict[str, float | None]:
    """A segment's accuracy estimated from confidence this window, with its 95 % band (None without confidence)."""
    found = estimate(bins, right, binary=False) if bins.sum() else {}
    return {"estimated": found.get("accuracy"), "estimated_band": found.get("accuracy_band")}


def window_level(summary: dict[str, Any], signal: str) -> float | None:
    """The level of ``signal`` in a window summary: mean latency, error rate, mean confidence.

    >>> window_level({"count": 4, "error_rate": 0.25, "latency_ms": {"mean": 12.0}, "confidence": None}, "latency_ms")
    12.0
    >>> window_level({"count": 4, "error_rate": 0.25, "latency_ms": {"mean": 12.0}, "confidence": None}, "confidence")
    """
    if signal == "error_rate":
        return summary["error_rate"] if summary["count"] else None
    stats = summary.get("confidence" if signal == "confidence" else "latency_ms") or {}
    return stats.get("mean")


EXPLAINED_SIGNALS = ("latency_ms", "error_rate", "confidence")


class SegmentState:
    """One segment's windows, detectors, alert lifecycle, usual levels and labels."""

    __slots__ = (
        "bins",
        "events",
        "labelled",
        "lifecycle",
        "rules",
        "usual",
        "usual_windows",
        "window_start",
        "windows",
    )

    def __init__(self, windows: EventTimeWindows, rules: dict[str, dict[str, Any]], lifecycle: Any, bins: int) -> None:
        self.windows = windows
        self.rules = rules
        self.lifecycle = lifecycle
        self.events = 0
        self.window_start: float | None = None
        # Usual level per explained signal: the mean over its last closed windows.
        self.usual: dict[str, float] = {}
        self.usual_windows = 0
        # Whether each of the last labelled predictions was right.
        self.labelled: deque[bool] = deque(maxlen=500)
        # This window's predictions by (predicted positive, confidence bin): the estimated accuracy.
        self.bins = np.zeros((2, bins), dtype=np.int64)


class SegmentMonitor:
    """The segments of one model version.

    >>> from stream.monitoring.monitor_file import MonitorConfig
    >>> settings = DetectionSettings(zscore_warmup=50, max_segments=2)
    >>> seg = SegmentMonitor("m", "1", settings, MonitorConfig().for_model("m"))
    >>> ev = lambda t, s, lat: {"timestamp": t, "segment": s, "latency_ms": lat, "error": None}
    >>> seg.process([ev(i * 0.1, s, 20.0 + i % 5) for i in range(600) for s in ("eu", "us", "asia")])
    []
    >>> sorted(seg.segments)
    ['eu', 'other', 'us']
    >>> alerts = seg.process([ev(60.0 + i * 0.1, "us", 900.0) for i in range(30)])
    >>> sorted({(a["segment"], a["signal"]) for a in alerts})
    [('us', 'latency_ms')]
    >>> [d["segment"] for d in seg.drivers("latency_ms")]
    ['us']
    """

    def __init__(
        self,
        model: str,
        version: str,
        detection: DetectionSettings,
        config: ModelMonitors,
        calibration: ConfidenceCalibration | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.detection = detection
        self.config = config
        # The version's calibration, shared: a segment's estimate uses what every label taught.
        self.calibration = calibration or ConfidenceCalibration()
        self.segments: dict[str, SegmentState] = {}
        self.sizes = datasketches.frequent_strings_sketch(8)

    def _new_state(self, name: str) -> SegmentState:
        d = self.detection
        # The hopping view spans this window and the one before: what drivers() compares with the usual.
        windows = EventTimeWindows(d.window_s, 2 * d.window_s, d.window_s, d.lateness_s, 0, d.max_categories)
        rules = {signal: build_signal_rules(signal, self.config, d) for signal in SEGMENT_SIGNALS}
        return SegmentState(windows, rules, lifecycle(self.model, self.version, d, segment=name), self.calibration.bins)

    def segment_of(self, name: str, count: int) -> str:
        """Where events of segment ``name`` are counted: its own state, or ``other``."""
        self.sizes.update(name, count)
        if name in self.segments:
            return name
        watched = [s for s in self.segments if s != OTHER_SEGMENTS]
        if len(watched) < self.detection.max_segments:
            self.segments[name] = self._new_state(name)
            return name
        if watched:
            lightest = min(watched, key=lambda s: self.sizes.get_upper_bound(s))
            if self.sizes.get_lower_bound(name) > REPLACE_FACTOR * self.sizes.get_upper_bound(lightest):
                del self.segments[lightest]
                self.segments[name] = self._new_state(name)
                return name
        if OTHER_SEGMENTS not in self.segments:
            self.segments[OTHER_SEGMENTS] = self._new_state(OTHER_SEGMENTS)
        return OTHER_SEGMENTS

    def process(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Update the segments of ``events`` (those without one are the version's only); return segment alerts."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            name = event.get("segment")
            if isinstance(name, str):
                groups.setdefault(name, []).append(event)
        pooled: dict[str, list[dict[str, Any]]] = {}
        for name, group in groups.items():
            pooled.setdefault(self.segment_of(name, len(group)), []).extend(group)
        alerts: list[dict[str, Any]] = []
        for name, group in pooled.items():
            alerts += self._process(self.segments[name], group)
        return alerts

    def _process(self, state: SegmentState, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        d = self.detection
        start = float(np.floor(events[0]["timestamp"] / d.window_s) * d.window_s)
        if state.window_start is not None and start > state.window_start:
            self._close_window(state)
        if state.window_start is None or start > state.window_start:
            state.window_start = start
        placed = state.windows.update(events)
        state.events += len(events)
        self._count_confidence(state, placed)
        times = [e["timestamp"] for e in placed]
        series = {
            "latency_ms": [e["latency_ms"] for e in placed],
            "error_rate": [1.0 if e.get("error") else 0.0 for e in placed],
        }
        findings = [
            f
            for signal, rules in state.rules.items()
            for rule in rules.values()
            for f in rule.update(series[signal], times)
        ]
        # A slice too small to describe anyone but a few people never reaches an alert.
        if findings and state.windows.tumbling().count < d.min_slice_events:
            findings = []
        watermark = state.windows.watermark
        return state.lifecycle.observe(findings, watermark) if watermark is not None else []

    def _count_confidence(self, state: SegmentState, events: list[dict[str, Any]]) -> None:
        rows = [
            (e["confidence"], e.get("prediction") == 1) for e in events if isinstance(e.get("confidence"), int | float)
        ]
        if rows:
            confidences = np.fromiter((c for c, _ in rows), np.float64, len(rows))
            positive = np.fromiter((p for _, p in rows), np.int64, len(rows))
            np.add.at(state.bins, (positive, self.calibration.bin_of(confidences)), 1)

    def _close_window(self, state: SegmentState) -> None:
        summary = state.windows.tumbling(state.window_start).summary(state.windows.watermark)
        if summary["count"]:
            state.usual_windows += 1
            weight = 1.0 / min(state.usual_windows, BASELINE_WINDOWS)
            for signal in EXPLAINED_SIGNALS:
                level = window_level(summary, signal)
                if level is not None:
                    usual = state.usual.get(signal, level)
                    state.usual[signal] = usual + weight * (level - usual)
        state.bins = np.zeros_like(state.bins)

    def process_label(self, segment: str | None, right: bool) -> None:
        """Count one labelled prediction of ``segment`` (right or wrong)."""
        if segment is not None:
            state = self.segments.get(segment) or self.segments.get(OTHER_SEGMENTS)
            if state is not None:
                state.labelled.append(bool(right))

    def drivers(self, signal: str, min_share: float = 0.1) -> list[dict[str, Any]]:
        """The segments driving a change of ``signal`` now, largest share first.

        "Now" is this window and the one before (an alert may fire in a
        window's first seconds, when a segment has few events in it). A
        segment's part is its events x (level now - its usual level); its
        share is that over the sum of the positive parts. Segments under
        ``min_share``, without a usual level yet, or with fewer than
        ``min_slice_events`` events are not named.
        """
        parts = []
        for name, state in self.segments.items():
            usual = state.usual.get(signal)
            summary = state.windows.hopping().summary(state.windows.watermark)
            level = window_level(summary, signal)
            if usual is None or level is None or summary["count"] < self.detection.min_slice_events:
                continue
            parts.append((name, summary["count"] * (level - usual), level, usual, summary["count"]))
        if signal == "confidence":  # a drop is what matters there
            parts = [(n, -p, lv, u, c) for n, p, lv, u, c in parts]
        total = sum(p for _, p, _, _, _ in parts if p > 0)
        if total <= 0:
            return []
        ranked = sorted(parts, key=lambda x: x[1], reverse=True)
        return [
            {"segment": n, "share": round(p / total, 3), "now": round(lv, 4), "usual": round(u, 4), "events": c}
            for n, p, lv, u, c in ranked
            if p / total >= min_share
        ]

    def summary(self) -> dict[str, Any]:
        """Each segment's current window, usual levels and accuracy; small slices suppressed."""
        right = self.calibration.right_probability()
        out: dict[str, Any] = {}
        for name, state in sorted(self.segments.items()):
            window = state.windows.tumbling().summary(state.windows.watermark)
            if window["count"] < self.detection.min_slice_events:
                out[name] = {
                    "suppressed": True,
                    "reason": f"fewer than {self.detection.min_slice_events} events in the window",
                }
                continue
            labelled = len(state.labelled)
            out[name] = {
                "events": state.events,
                "window": {
                    k: window[k]
                    for k in (
                        "start",
                        "end",
                        "count",
                        "throughput_per_s",
                        "error_rate",
                        "latency_ms",
                        "confidence",
                        "prediction",
                    )
                },
                "usual": {k: round(v, 4) for k, v in state.usual.items()},
                "accuracy": {
                    **_estimated(state.bins, right),
                    "realised": round(sum(state.labelled) / labelled, 4)
                    if labelled >= self.detection.min_slice_events
                    else None,
                    "labelled": labelled,
                },
                "firing": sorted({a["alert"]["signal"] for a in state.lifecycle.active.values()}),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "state_version": STATE_VERSION,
            "sizes": base64.b64encode(self.sizes.serialize()).decode("ascii"),
            "segments": {
                name: {
                    "windows": s.windows.to_dict(),
                    "rules": {sig: {n: r.to_dict() for n, r in rules.items()} for sig, rules in s.rules.items()},
                    "lifecycle": s.lifecycle.to_dict(),
                    "events": s.events,
                    "window_start": s.window_start,
                    "usual": dict(s.usual),
                    "usual_windows": s.usual_windows,
                    "labelled": [int(x) for x in s.labelled],
                    "bins": s.bins.tolist(),
                }
                for name, s in self.segments.items()
            },
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        if state.get("state_version") != STATE_VERSION:
            raise ValueError(f"segments state version {state.get('state_version')!r}, expected {STATE_VERSION}")
        self.sizes = datasketches.frequent_strings_sketch.deserialize(base64.b64decode(state["sizes"], validate=True))
        self.segments = {}
        for name, saved in state["segments"].items():
            s = self._new_state(name)
            s.windows = EventTimeWindows.from_dict(saved["windows"])
            for signal, rules in saved["rules"].items():
                for rule_name, rule_state in rules.items():
                    if rule_name in s.rules.get(signal, {}):
                        s.rules[signal][rule_name].load_state(rule_state)
            s.lifecycle.load_state(saved["lifecycle"])
            s.events, s.window_start = int(saved["events"]), saved["window_start"]
            s.usual, s.usual_windows = {k: float(v) for k, v in saved["usual"].items()}, int(saved["usual_windows"])
            s.labelled.extend(bool(x) for x in saved["labelled"])
            bins = np.asarray(saved["bins"], dtype=np.int64)
            if bins.shape == s.bins.shape:
                s.bins = bins
            self.segments[name] = s

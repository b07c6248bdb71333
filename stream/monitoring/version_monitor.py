"""One model version's monitoring state: windows, reference profile and detectors.

Pure domain, no I/O (a reference profile comes from the injected
:data:`~stream.monitoring.profiles.ProfileSource`): feed :meth:`VersionMonitor.process` a version's decoded events,
get alert messages back. :class:`stream.monitoring.model_monitor.ModelMonitor` holds one per
version and the model-wide bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.detectors.base import BatchDetector, Finding, WindowDetector, right_skewed, update_rules
from stream.detectors.cbpe import ConfidenceBasedPerformance
from stream.detectors.client_abuse import ClientAbuseRule
from stream.detectors.multivariate import MahalanobisRule
from stream.detectors.performance import PerformanceRule
from stream.detectors.quality import DataQualityRule
from stream.detectors.reference_drift import ReferenceDriftRule
from stream.detectors.resources import ResourceRule
from stream.detectors.security import PrivateDataRule
from stream.monitoring.alert_lifecycle import lifecycle
from stream.monitoring.monitor_file import ModelMonitors, MonitorConfig, build_signal_rules
from stream.monitoring.profiles import ProfileSource, ReferenceProfile
from stream.monitoring.reference_learning import ReferenceLearner
from stream.monitoring.segments import EXPLAINED_SIGNALS, SegmentMonitor
from stream.monitoring.signals import signal_series
from stream.settings import DetectionSettings
from stream.stats import EventTimeWindows, WindowStats
from stream.stats.columns import BatchColumns

# A batch is split at most this many times at window boundaries (see VersionMonitor.process).
MAX_WINDOW_CUTS = 64


@dataclass(slots=True)
class Piece:
    """What one piece of a batch found, before the alert lifecycle sees it."""

    findings: list[Finding]
    watermark: float
    until: float  # the piece's latest event time
    segment_alerts: list[dict[str, Any]]


class VersionMonitor:
    """Windows, reference profile and detectors of one model version."""

    __slots__ = (
        "clients",
        "config",
        "detection",
        "drift",
        "estimated",
        "events",
        "learner",
        "lifecycle",
        "model",
        "multivariate",
        "performance",
        "performance_lifecycle",
        "private_data",
        "quality",
        "reference",
        "resources",
        "segments",
        "signal_rules",
        "version",
        "windows",
    )

    def __init__(
        self,
        model: str,
        version: str,
        detection: DetectionSettings,
        config: ModelMonitors | None = None,
        profiles: ProfileSource | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.detection = detection
        self.config = config or MonitorConfig().for_model(model)
        # Detectors per signal, built on the signal's first values.
        self.signal_rules: dict[str, dict[str, Any]] = {}
        self.windows = EventTimeWindows(
            detection.window_s,
            detection.hopping_s,
            detection.hop_s,
            detection.lateness_s,
            detection.max_features,
            detection.max_categories,
        )
        self.lifecycle = lifecycle(model, version, detection)
        self.performance = performance_rule(self.config.performance, detection)
        # Labels run on their own clock (they may come hours after the
        # predictions), so their alerts fold and resolve separately.
        self.performance_lifecycle = lifecycle(model, version, detection)
        # Performance estimated from confidence, before labels; its alerts run on the events' clock.
        self.estimated = estimated_performance_rule(self.config.performance, detection)
        self.segments = SegmentMonitor(
            model, version, detection, self.config, None if self.estimated is None else self.estimated.calibration
        )
        self.events = 0
        # Security and resources: what every version is watched for, without configuration.
        self.private_data = PrivateDataRule(detection.window_s)
        self.clients = ClientAbuseRule(
            detection.window_s, min_slice_events=detection.min_slice_events, **self.config.clients
        )
        self.resources = ResourceRule(detection.window_s)
        self.multivariate: MahalanobisRule | None = None
        self.drift: ReferenceDriftRule | None = None
        self.reference: ReferenceProfile | None = None
        self.learner: ReferenceLearner | None = None
        self.quality: DataQualityRule | None = None
        profile = profiles(model, version) if profiles is not None else None
        if profile is not None:
            self._set_reference(profile)
        else:
            self.learner = self._learner()

    def _set_reference(self, profile: ReferenceProfile) -> None:
        self.reference = profile
        self.learner = None
        self.windows.fix_kinds(profile.stats.features.kinds())
        self.quality = DataQualityRule(profile.stats, window_s=self.detection.window_s)
        self.multivariate = multivariate_rule(profile, self.config.multivariate, self.detection.window_s)
        options = {"alpha": self.detection.drift_alpha, "min_psi": self.detection.drift_min_psi}
        self.drift = ReferenceDriftRule(
            profile.stats, window_s=self.detection.window_s, **{**options, **self.config.reference_drift}
        )

    def rules(self, signal: str) -> dict[str, Any]:
        """The detectors watching ``signal``, by detector name."""
        rules = self.signal_rules.get(signal)
        if rules is None:
            rules = self.signal_rules[signal] = build_signal_rules(signal, self.config, self.detection)
        return rules

    def process(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Update windows and detectors with one version's events; return alerts.

        A batch that runs over several tumbling windows is taken one window
        at a time, so that each window is checked as it fills, whatever the
        batch size (a worker catching up takes thousands of events at once).
        The per-signal stream detectors know no windows and decide alike
        however their values are batched, so they take the whole batch in one
        call (their per-call cost was most of the engine's time); each of
        their findings then joins the piece its event time falls in, and the
        pieces' findings go through the alert lifecycle in order, as if each
        piece had been fed alone.
        """
        # Each feature's column is extracted once for the batch; a piece reads its part.
        columns = BatchColumns(events)
        pieces: list[Piece] = []
        for start, stop in self._window_pieces(columns):
            pieces += self._process_to_tests(events[start:stop], columns.part(start, stop))
        stream = sorted(self._stream_findings(events, columns), key=lambda f: f.event_time)
        alerts: list[dict[str, Any]] = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            taken = 0
            while taken < len(stream) and (last or stream[taken].event_time <= piece.until):
                taken += 1
            findings, stream = stream[:taken] + piece.findings, stream[taken:]
            alerts += self._with_drivers(self.lifecycle.observe(findings, piece.watermark)) + piece.segment_alerts
        return alerts

    def _window_pieces(self, columns: BatchColumns) -> list[tuple[int, int]]:
        """Where the batch's runs of one tumbling window start and stop."""
        if len(columns) > 1:
            windows = np.floor(columns.field("timestamp") / self.detection.window_s)
            cuts = np.flatnonzero(windows[1:] != windows[:-1]) + 1
            # Events badly out of order would cut the batch into crumbs; those go in one piece.
            if 0 < cuts.size <= MAX_WINDOW_CUTS:
                return list(zip([0, *cuts.tolist()], [*cuts.tolist(), len(columns)], strict=True))
        return [(0, len(columns))]

    def _stream_findings(self, events: list[dict[str, Any]], columns: BatchColumns) -> list[Finding]:
        """The stream detectors' findings on ``events`` (after the windows, which learn new feature names)."""
        calls = [
            (rule, (values, times))
            for signal, values, times in signal_series(events, columns, self.config, self.windows.feature_names)
            for rule in self.rules(signal).values()
        ]
        return [finding for found in update_rules(calls) for finding in found]

    def _process_to_tests(self, events: list[dict[str, Any]], columns: BatchColumns) -> list[Piece]:
        """Process ``events`` in pieces that end where a per-window rule's next test is due.

        The test then sees the same events whatever the batching, so a replay
        after a crash decides alike and publishes the same alert ids.
        """
        pieces: list[Piece] = []
        done = 0
        while done < len(events):
            take = len(events) - done
            # None of these exist before the reference is learnt, which may happen mid-batch.
            rules = self.window_rules()
            if rules:
                window = self.windows.tumbling(events[done]["timestamp"])
                rooms = (rule.events_until_test(window.start, window.count) for rule in rules)
                take = min([take, *(room for room in rooms if room is not None)])
            pieces.append(self._process(events[done : done + take], columns.part(done, done + take)))
            done += take
        return pieces

    def _process(self, events: list[dict[str, Any]], columns: BatchColumns) -> Piece:
        until = float(columns.field("timestamp").max())
        placed = self.windows.update(events, columns)
        self.events += len(events)
        findings = []
        for batch_rule in self.batch_rules():
            findings += batch_rule.update(events, columns)
        for finding in findings:
            if finding.detector == "cbpe" and self.performance.labelled:
                # The realised metrics beside the estimate (not a reference held by the rule: no cycle).
                finding.evidence["realised"] = {k: round(v, 6) for k, v in self.performance.values().items()}
        watermark = self.windows.watermark
        assert watermark is not None
        checked = placed
        if self.learner is not None:
            # A batch may complete the reference and go on past it: the rest is checked against it.
            used, profile = self.learner.learn(events, self.windows.feature_kinds, columns)
            if profile is not None:
                self._set_reference(profile)
            checked = _after(placed, events, used) if self.quality is not None else []
            columns = columns.part(used, len(events))
        if checked:
            window = self.windows.tumbling()
            if len(checked) != len(columns):  # events came too late for any window: their columns are left out
                columns = BatchColumns(checked)
            for window_rule in self.window_rules():
                findings += window_rule.check_window(window, checked, columns, watermark)
        return Piece(findings, watermark, until, self.segments.process(placed))

    def _with_drivers(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Firing model-wide alerts about latency, errors or confidence, with the segments that drive them."""
        if not self.segments.segments:
            return alerts
        for alert in alerts:
            if alert["status"] == "firing" and alert["signal"] in EXPLAINED_SIGNALS:
                alert["evidence"] = {**alert["evidence"], "segments": self.segments.drivers(alert["signal"])}
        return alerts

    def batch_rules(self) -> tuple[BatchDetector, ...]:
        """The detectors fed whole events: private data, client abuse, host resources, estimated performance."""
        rules: tuple[BatchDetector, ...] = (self.private_data, self.clients, self.resources)
        return rules if self.estimated is None else (*rules, self.estimated)

    def window_rules(self) -> list[WindowDetector]:
        """The detectors testing the tumbling window against the reference (none before there is one)."""
        return [r for r in (self.quality, self.drift, self.multivariate) if r is not None]

    def process_label(
        self,
        label: Any,
        prediction: Any,
        label_time: float,
        confidence: float | None = None,
        segment: str | None = None,
    ) -> list[dict[str, Any]]:
        """Add one labelled prediction (with its confidence and segment, as published); return performance alerts."""
        if self.estimated is not None:
            self.estimated.learn(label, prediction, confidence)
        self.segments.process_label(segment, label == prediction)
        findings = self.performance.update(label, prediction, label_time)
        return self.performance_lifecycle.observe(findings, label_time)

    def _learner(self, stats: WindowStats | None = None) -> ReferenceLearner:
        d = self.detection
        return ReferenceLearner(
            self.model, self.version, d.reference_events, d.reference_min_s, d.max_features, d.max_categories, stats
        )

    def summary(self, view: str = "tumbling") -> dict[str, Any]:
        """The version's statistics in the ``tumbling`` or ``hopping`` view."""
        window = self.windows.hopping() if view == "hopping" else self.windows.tumbling()
        reference = self.reference
        return {
            "model_version": self.version,
            "events": self.events,
            "last_event_time": self.windows.watermark,
            "late_events": self.windows.late,
            "too_late_events": self.windows.too_late,
            "window": {"type": view, **window.summary(self.windows.watermark)},
            "latency_baseline": next(
                (r.baseline() for r in self.rules("latency_ms").values() if hasattr(r, "baseline")), None
            ),
            "reference": None
            if reference is None
            else {"source": reference.source, "events": reference.events, "created_at": reference.created_at},
            "performance": self.performance.summary(),
            "estimated_performance": None if self.estimated is None else self.estimated.summary(),
            "reference_progress": None if self.learner is None else self.learner.progress(),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "events": self.events,
            "windows": self.windows.to_dict(),
            "reference": None if self.reference is None else self.reference.to_dict(),
            "reference_builder": None if self.learner is None else self.learner.stats.to_dict(),
            "quality": None if self.quality is None else self.quality.to_dict(),
            "drift": None if self.drift is None else self.drift.to_dict(),
            "multivariate": None if self.multivariate is None else self.multivariate.to_dict(),
            "signal_rules": {
                signal: {name: rule.to_dict() for name, rule in rules.items()}
                for signal, rules in self.signal_rules.items()
            },
            "lifecycle": self.lifecycle.to_dict(),
            "private_data": self.private_data.to_dict(),
            "clients": self.clients.to_dict(),
            "resources": self.resources.to_dict(),
            "performance": self.performance.to_dict(),
            "performance_lifecycle": self.performance_lifecycle.to_dict(),
            "estimated_performance": None if self.estimated is None else self.estimated.to_dict(),
            "segments": self.segments.to_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        self.events = state["events"]
        self.windows = EventTimeWindows.from_dict(state["windows"])
        if self.reference is not None:
            self.windows.fix_kinds(self.reference.stats.features.kinds())
        if state["reference"] is not None and (self.reference is None or self.reference.source == "first_events"):
            # A profile file present now wins over a learnt reference.
            self._set_reference(ReferenceProfile.from_dict(state["reference"]))
            if state["quality"] is not None and self.quality is not None:
                self.quality.load_state(state["quality"])
            if state["drift"] is not None and self.drift is not None:
                self.drift.load_state(state["drift"])
            if state["multivariate"] is not None and self.multivariate is not None:
                self.multivariate.load_state(state["multivariate"])
        elif state["reference_builder"] is not None and self.reference is None:
            self.learner = self._learner(WindowStats.from_dict(state["reference_builder"]))
        for signal, saved in state["signal_rules"].items():
            rules = self.rules(signal)
            for name, rule_state in saved.items():
                # A detector dropped from the monitor file since is simply not restored.
                if name in rules:
                    rules[name].load_state(rule_state)
        self.lifecycle.load_state(state["lifecycle"])
        for name in ("private_data", "clients", "resources"):
            getattr(self, name).load_state(state[name])
        # Learnt labels and reference over the monitor file's current parameters.
        self.performance.load_state(state["performance"])
        self.performance_lifecycle.load_state(state["performance_lifecycle"])
        # States saved before estimation existed, or with it turned off since, start it afresh.
        if self.estimated is not None and state.get("estimated_performance") is not None:
            self.estimated.load_state(state["estimated_performance"])
        if "segments" in state:
            self.segments.load_state(state["segments"])


def performance_rule(params: dict[str, Any], detection: DetectionSettings) -> PerformanceRule:
    """The label-based performance rule: the monitor file's parameters over the worker-wide defaults."""
    return PerformanceRule(
        window=params.get("window", detection.performance_window),
        reference_labels=params.get("window", detection.performance_window),
        margin=params.get("margin", detection.performance_margin),
        metric=params.get("metric"),
        pos_label=params.get("pos_label", 1),
        window_s=detection.window_s,
    )


def estimated_performance_rule(
    params: dict[str, Any], detection: DetectionSettings
) -> ConfidenceBasedPerformance | None:
    """Performance estimated from confidence, over as many predictions as the label-based rule's window."""
    if not params.get("estimate", True):
        return None
    window = params.get("window", detection.performance_window)
    return ConfidenceBasedPerformance(
        chunk=window,
        check_every=max(1, window // 5) if window % 5 == 0 else window,
        margin=params.get("margin", detection.performance_margin),
        metric=params.get("metric"),
        pos_label=params.get("pos_label", 1),
        window_s=detection.window_s,
    )


def multivariate_rule(
    profile: ReferenceProfile, params: dict[str, Any] | None, window_s: float
) -> MahalanobisRule | None:
    """The multivariate rule over the profile's numeric features (None: not configured, or under two features)."""
    if params is None:
        return None
    params = dict(params)
    limit = params.pop("max_features", 20)
    features = profile.stats.features.features
    numeric = [n for n, f in features.items() if f.kind == "numeric"][:limit]
    if len(numeric) < 2:
        return None
    skewed = [n for n in numeric if _positive_and_skewed(features[n])]
    return MahalanobisRule(numeric, window_s=window_s, log_features=skewed, **params)


def _positive_and_skewed(stats: Any) -> bool:
    """Whether a reference feature is compared as logs (see :func:`right_skewed`)."""
    median = stats.sketch.quantile(0.5)
    return (
        bool(stats.moments.count) and median is not None and right_skewed(stats.moments.min, stats.moments.mean, median)
    )


def _after(placed: list[dict[str, Any]], events: list[dict[str, Any]], used: int) -> list[dict[str, Any]]:
    """The placed events among ``events[used:]``, in order."""
    if placed is events:
        return events[used:]
    rest = {id(e) for e in events[used:]}
    return [e for e in placed if id(e) in rest]

"""Per-model monitoring state: one :class:`VersionMonitor` per version, offsets and envelope ids.

This is the business logic behind the ingest task. It holds no I/O: feed it
a model's decoded events, get alert messages back, and store
:meth:`ModelMonitor.to_dict` wherever the state must survive (a Faust table).
The state is plain, versioned data (``STATE_VERSION``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import orjson

from stream.detectors.silence import SilenceRule
from stream.monitoring.alert_lifecycle import AlertLifecycle
from stream.monitoring.label_join import encode_entry
from stream.monitoring.monitor_file import MonitorConfig
from stream.monitoring.profiles import ProfileSource
from stream.monitoring.version_monitor import VersionMonitor
from stream.settings import DetectionSettings

# Envelope ids remembered per model. The SDK sends a failed envelope again
# before any newer one of the same model, so a handful would do; 64 ids cost
# about 2 KB of state.
RECENT_BATCHES = 64
# The model_version of a model-wide alert (silence): no version sends.
ALL_VERSIONS = "*"
# The layout of ModelMonitor.to_dict. Version 1 (unversioned) held pickled river objects.
# Version 3 keeps sketch buckets and detector buffers as dense lists; version 4 keeps them as
# numpy arrays and the join's changes as their JSON text (the worker's state codec stores both
# as they are). Versions 2 and 3 are still read.
STATE_VERSION = 4
READABLE_STATE_VERSIONS = (2, 3, 4)


class StateError(ValueError):
    """A stored model state this release cannot read (another version, or damaged)."""


class ModelMonitor:
    """Everything watched for one model, split by model version.

    >>> mon = ModelMonitor("m", DetectionSettings(zscore_warmup=20, zscore_min_outliers=2))
    >>> ev = lambda i, lat: {"model_version": "1", "timestamp": 100.0 + i,
    ...                      "latency_ms": lat, "error": None}
    >>> mon.process([ev(i, 10.0 + i % 3) for i in range(40)])
    []
    >>> alerts = mon.process([ev(41, 500.0), ev(42, 480.0)])
    >>> alerts[0]["signal"], alerts[0]["status"], mon.versions["1"].events
    ('latency_ms', 'firing', 42)
    """

    def __init__(
        self,
        model: str,
        detection: DetectionSettings,
        monitors: MonitorConfig | None = None,
        profiles: ProfileSource | None = None,
    ) -> None:
        self.model = model
        self.detection = detection
        # Where a version's reference profile comes from, if anywhere (see stream.monitoring.profiles).
        self.profiles = profiles
        self.config = (monitors or MonitorConfig()).for_model(model)
        self.versions: dict[str, VersionMonitor] = {}
        self.seq = 0
        # Predictions are kept for joining once the model has shown it gets labels.
        self.expects_labels = detection.join_predictions == "always"
        self.labels: dict[str, int] = {}
        # Label-join entries this state's records wrote (their JSON text), by request id, until a
        # checkpoint has saved them with it and written them to the join table
        # (see stream.monitoring.label_join).
        self.join_changes: dict[str, bytes] = {}
        # The last input record applied, per "topic:partition", saved with the
        # state it produced: a record replayed after a crash or a rebalance
        # (at-least-once delivery) is recognised and not counted twice.
        self.offsets: dict[str, int] = {}
        # Ids of the last envelopes applied: an envelope the SDK sent again after
        # a lost acknowledgement arrives at a new offset but with the same id.
        self.recent_batches: list[str] = []
        self.notices: list[dict[str, Any]] = []
        # Silence is the model's, by the wall clock: whichever version sends, records arrive.
        self.traffic = SilenceRule(after_s=detection.silence_after_s, min_silence_s=detection.silence_min_s)
        # Repeats fold within the cooldown; the alert resolves with the first record back (see process),
        # never for quiet: quiet is what it is about.
        self.traffic_lifecycle = AlertLifecycle(
            model, ALL_VERSIONS, cooldown_s=detection.alert_cooldown_s, resolve_after_s=math.inf
        )

    def take_notices(self) -> list[dict[str, Any]]:
        """Alerts about the monitor itself (an unreadable state), published once by the caller."""
        out, self.notices = self.notices, []
        return out

    def seen_batch(self, batch_id: str | None) -> bool:
        """Whether the envelope ``batch_id`` is among the last ones applied.

        >>> mon = ModelMonitor("m", DetectionSettings())
        >>> mon.remember_batch("b1")
        >>> mon.seen_batch("b1"), mon.seen_batch("b2"), mon.seen_batch(None)
        (True, False, False)
        """
        return batch_id is not None and batch_id in self.recent_batches

    def remember_batch(self, batch_id: str | None) -> None:
        """Remember an applied envelope's id; the oldest is forgotten past ``RECENT_BATCHES``."""
        if batch_id is None:
            return
        self.recent_batches.append(batch_id)
        del self.recent_batches[:-RECENT_BATCHES]

    def already_applied(self, source: str, offset: int) -> bool:
        """Whether the record at ``offset`` of ``source`` is already in this state.

        >>> mon = ModelMonitor("m", DetectionSettings())
        >>> mon.mark_applied("events:0", 41)
        >>> mon.already_applied("events:0", 41), mon.already_applied("events:0", 42)
        (True, False)
        """
        return offset <= self.offsets.get(source, -1)

    def mark_applied(self, source: str, offset: int) -> None:
        """Record that the record at ``offset`` of ``source`` is in this state."""
        self.offsets[source] = offset

    def process(self, events: Iterable[dict[str, Any]], arrived_at: float | None = None) -> list[dict[str, Any]]:
        """Update every version's windows and detectors; return alert messages.

        ``arrived_at`` is the wall-clock time the records arrived (now by default), for :meth:`check_traffic`.
        """
        by_version: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_version.setdefault(event["model_version"], []).append(event)
        arrived_at = time.time() if arrived_at is None else arrived_at
        alerts: list[dict[str, Any]] = []
        for version, batch in by_version.items():
            self.traffic.arrived(arrived_at, version)
            alerts.extend(self.version(version).process(batch))
        if by_version:
            alerts += self.traffic_lifecycle.resolve(arrived_at, after_s=0.0)
        return alerts

    def check_traffic(self, now: float) -> list[dict[str, Any]]:
        """A ``traffic`` alert while the model has been silent past its threshold (call it on a clock)."""
        findings = self.traffic.check(now)
        return self.traffic_lifecycle.observe(findings, now) if findings else []

    def version(self, version: str) -> VersionMonitor:
        """The state of ``version``, created on first use."""
        state = self.versions.get(version)
        if state is None:
            state = self.versions[version] = VersionMonitor(
                self.model, version, self.detection, self.config, self.profiles
            )
        return state

    def process_label(
        self,
        version: str,
        label: Any,
        prediction: Any,
        label_time: float,
        confidence: float | None = None,
        segment: str | None = None,
    ) -> list[dict[str, Any]]:
        """Add one joined label (and the prediction's confidence and segment); return performance alerts."""
        return self.version(version).process_label(label, prediction, label_time, confidence, segment)

    def take_retrain_requests(self) -> list[dict[str, Any]]:
        """Retraining requests raised since the last call, across versions."""
        out: list[dict[str, Any]] = []
        for v in self.versions.values():
            out += v.lifecycle.take_retrain_requests() + v.performance_lifecycle.take_retrain_requests()
        return out

    def count_labels(self, outcome: str, n: int = 1) -> None:
        """Count one outcome of the label join (joined, duplicate, never matched, ...)."""
        self.labels[outcome] = self.labels.get(outcome, 0) + n

    def traffic_status(self, now: float | None = None) -> dict[str, Any]:
        """When records last arrived (wall clock), how long ago, and whether the model is silent."""
        now = time.time() if now is None else now
        quiet = self.traffic.quiet_s(now)
        return {
            "last_record_at": self.traffic.last_arrival,
            "quiet_s": None if quiet is None else round(quiet, 1),
            "silent_after_s": self.traffic.threshold(),
            "silent": self.traffic.silent(now),
        }

    def overview(self) -> dict[str, Any]:
        """Models list entry: versions, last event time, events in the current window, and traffic."""
        return {
            "model": self.model,
            "traffic": self.traffic_status(),
            "versions": {
                version: {
                    "events": v.events,
                    "last_event_time": v.windows.watermark,
                    "window_events": v.windows.tumbling().count,
                }
                for version, v in self.versions.items()
            },
        }

    def segments(self) -> dict[str, Any]:
        """Every version's segments: their current window, usual levels and accuracy; small slices suppressed."""
        return {
            "model": self.model,
            "max_segments": self.detection.max_segments,
            "min_slice_events": self.detection.min_slice_events,
            "versions": {v: vm.segments.summary() for v, vm in self.versions.items()},
        }

    def summary(self, view: str = "tumbling") -> dict[str, Any]:
        """Every version's statistics in the ``tumbling`` or ``hopping`` view."""
        return {
            "model": self.model,
            "traffic": self.traffic_status(),
            "labels": dict(self.labels),
            "versions": {v: vm.summary(view) for v, vm in self.versions.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain state for the model's table entry: JSON types, numpy arrays of numbers and bytes."""
        return {
            "state_version": STATE_VERSION,
            "seq": self.seq,
            "expects_labels": self.expects_labels,
            "labels": dict(self.labels),
            "offsets": dict(self.offsets),
            "recent_batches": list(self.recent_batches),
            "join_changes": dict(self.join_changes),
            "versions": {version: v.to_dict() for version, v in self.versions.items()},
            "traffic": {"rule": self.traffic.to_dict(), "lifecycle": self.traffic_lifecycle.to_dict()},
        }

    @classmethod
    def from_dict(
        cls,
        model: str,
        detection: DetectionSettings,
        state: dict[str, Any],
        monitors: MonitorConfig | None = None,
        profiles: ProfileSource | None = None,
    ) -> ModelMonitor:
        """Rebuild from :meth:`to_dict` output with the current settings.

        Raises :class:`StateError` for a state of another version or one that
        does not have the expected shape; nothing in a state is ever executed.
        """
        if not isinstance(state, dict) or state.get("state_version") not in READABLE_STATE_VERSIONS:
            found = state.get("state_version", "none") if isinstance(state, dict) else type(state).__name__
            readable = " and ".join(map(str, READABLE_STATE_VERSIONS))
            raise StateError(f"model state version {found}, this release reads {readable}")
        try:
            return cls._from_state(model, detection, state, monitors, profiles)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise StateError(f"model state does not have the expected shape ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def _from_state(
        cls,
        model: str,
        detection: DetectionSettings,
        state: dict[str, Any],
        monitors: MonitorConfig | None,
        profiles: ProfileSource | None,
    ) -> ModelMonitor:
        out = cls(model, detection, monitors, profiles)
        out.seq = state["seq"]
        out.expects_labels = out.expects_labels or state["expects_labels"]
        out.labels = dict(state["labels"])
        out.offsets = dict(state.get("offsets", {}))
        out.recent_batches = list(state.get("recent_batches", []))
        out.join_changes = {str(key): _join_entry(entry) for key, entry in state.get("join_changes", {}).items()}
        if "traffic" in state:  # states written before silence was watched start without its history
            out.traffic.load_state(state["traffic"]["rule"])
            out.traffic_lifecycle.load_state(state["traffic"]["lifecycle"])
        for version, vstate in state["versions"].items():
            vm = VersionMonitor(model, version, detection, out.config, profiles)
            vm.load_state(vstate)
            out.versions[version] = vm
        return out


def _join_entry(entry: bytes | list[Any]) -> bytes:
    """A join entry of a stored state as its JSON text: stored as that text (version 4) or as a list (before)."""
    if not isinstance(orjson.loads(entry) if isinstance(entry, bytes) else entry, list):
        raise TypeError(f"a join entry is a JSON list, not {entry!r:.80}")
    # Text read back is kept as it is; only a list (version 3) is encoded.
    return entry if isinstance(entry, bytes) else encode_entry(entry)

"""The Faust app factory: topics, the state table, agents and web pages.

``create_app`` builds a fresh app per call (tests run several side by side);
the worker command runs the one it returns. All topics are created by
``stream.topics`` before the app starts, so Faust is told not to declare any.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson

from stream.codec import Reject, TimeBounds
from stream.config import Settings
from stream.deadletter import dead_letter
from stream.exporter import ModelSeriesCollector
from stream.labels import LabelJoiner
from stream.metrics import WorkerMetrics
from stream.monitor import ModelMonitor
from stream.monitors import MonitorConfig
from stream.privacy.protect import EventPrivacy
from stream.topics import LABEL_JOIN_TABLE, MODEL_STATE_TABLE

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WorkerCounters:
    """What this worker process has done since it started."""

    records: int = 0
    labels: int = 0
    events: int = 0
    dead_letters: int = 0
    alerts: int = 0
    replayed: int = 0
    duplicate_batches: int = 0
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters with the uptime."""
        return {
            "records": self.records,
            "labels": self.labels,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "alerts": self.alerts,
            "replayed": self.replayed,
            "duplicate_batches": self.duplicate_batches,
            "uptime_s": round(time.time() - self.started_at, 3),
        }


class MonitorApp:
    """One worker's Faust app with its topics, table and per-model state."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.monitors = load_monitors(settings)
        self.counters = WorkerCounters()
        self.time_bounds = TimeBounds(settings.max_future_s, settings.earliest_timestamp)
        self.privacy = EventPrivacy(settings)
        os.makedirs(settings.data_path, exist_ok=True)
        self.metrics = WorkerMetrics(max_models=settings.metrics_max_models)
        # The last offset read per input partition, for the lag on /metrics.
        self.read_offsets: dict[tuple[str, int], int] = {}
        # The alerts this worker published lately, for the status page.
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=100)
        self.metrics.registry.register(ModelSeriesCollector(self._exported_models, self._lag, self.metrics.model_label))
        self.app = faust.App(
            settings.app_id,
            broker=settings.broker,
            store="memory://",
            datadir=settings.data_path,
            autodiscover=False,
            topic_partitions=settings.partitions,
            topic_allow_declare=False,
            topic_disable_leader=True,
            # A fresh group must read what producers sent before it joined.
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=settings.group_timeout_s,
            broker_rebalance_timeout=settings.group_timeout_s,
            broker_heartbeat_interval=1.0,
            broker_credentials=settings.faust_credentials(),
            web_enabled=True,
            # Faust's own table and routing pages would bypass the bearer token.
            web_tables_enabled=False,
            web_router_enabled=False,
            web_bind=settings.web_host,
            web_port=settings.web_port,
            web_host=settings.web_host,
            canonical_url=settings.advertised_url,
            **({"producer_max_batch_size": 1} if settings.single_record_batches else {}),
        )
        raw = {"key_type": bytes, "value_type": bytes}
        raw_codec = {"key_serializer": "raw", "value_serializer": "raw"}
        topics = settings.topics
        self.events_topic = self.app.topic(topics.events, partitions=settings.partitions, **raw, **raw_codec)
        self.alerts_topic = self.app.topic(topics.alerts, partitions=settings.partitions, **raw, **raw_codec)
        self.deadletter_topic = self.app.topic(topics.deadletter, partitions=settings.partitions, **raw, **raw_codec)
        self.labels_topic = self.app.topic(topics.labels, partitions=settings.partitions, **raw, **raw_codec)
        self.retrain_topic = self.app.topic(topics.retrain, partitions=settings.partitions, **raw, **raw_codec)
        # Keys are the model name as raw bytes, exactly the record key: Faust routes
        # a query by hashing the serialized key, and a JSON-quoted key would hash
        # to another partition than the one the producer chose.
        self.model_state = self.app.Table(
            MODEL_STATE_TABLE, default=None, partitions=settings.partitions, key_type=bytes
        )
        # Predictions waiting for their labels (and labels for their predictions).
        # Entries are written while handling the model's own records, so they
        # live in the model's partition like everything else about it.
        self.label_join = self.app.Table(LABEL_JOIN_TABLE, default=None, partitions=settings.partitions, key_type=bytes)
        self.joiner = LabelJoiner(self.label_join, settings.label_ttl_s)
        self._expired: dict[str, dict[str, int]] = {}
        self._monitors: dict[str, ModelMonitor] = {}
        self._warned_caps: set[tuple[str, str]] = set()
        # Imported here: the agent and page modules register themselves on this app.
        from stream.agents import ingest, labels, web

        ingest.register(self)
        labels.register(self)
        web.register(self)

    def monitor_for(self, model: str) -> ModelMonitor:
        """The model's live state, rebuilt from the table when the cache is stale.

        The cached object is only trusted while its sequence number matches
        the table's; after a rebalance or a restart the table wins.
        """
        stored = self.model_state.get(model.encode())
        cached = self._monitors.get(model)
        if cached is not None and stored is not None and cached.seq == stored["seq"]:
            return cached
        if stored is None:
            monitor = ModelMonitor(model, self.settings, self.monitors)
        else:
            monitor = ModelMonitor.from_dict(model, self.settings, stored, self.monitors)
        self._monitors[model] = monitor
        return monitor

    def save(self, monitor: ModelMonitor) -> None:
        """Write the model's state back to its changelog-backed table entry.

        The sequence number counts the writes, so a cached monitor whose number
        differs from the table's is stale.
        """
        monitor.seq += 1
        self.model_state[monitor.model.encode()] = monitor.to_dict()

    async def apply(
        self,
        model: str,
        change: Callable[[ModelMonitor, Any], list[dict[str, Any]]],
        data: Any,
        *,
        key: bytes | None,
        value: bytes | None,
        message: Any,
        batch_id: str | None = None,
    ) -> ModelMonitor | None:
        """Run ``change(monitor, data)`` on the model's state, save it and publish what it raised.

        A record whose offset the saved state already covers is a replay (the
        worker crashed or lost the partition after saving, before committing)
        and is skipped; so is an envelope whose ``batch_id`` was applied already
        (the SDK sent it again after losing the acknowledgement). One poisoned
        input must not stop the worker or leave the model's state half-updated:
        the state is rebuilt from the last saved one, a batch is redone event by
        event, and only what raises is dead-lettered, with the exception's type. Returns None when nothing was applied.
        """
        source = f"{message.topic}:{message.partition}"
        self.read_offsets[(message.topic, message.partition)] = message.offset
        started = time.perf_counter()
        try:
            monitor = self.monitor_for(model)
        except Exception as exc:
            log.exception("state of model %s cannot be loaded", model)
            await self._dead_letter_failure(exc, value, key, message)
            return None
        if monitor.already_applied(source, message.offset):
            self.counters.replayed += 1
            self.metrics.replayed.inc()
            return None
        if monitor.seen_batch(batch_id):
            self.counters.duplicate_batches += 1
            self.metrics.duplicate_batches.inc()
            return None
        try:
            alerts = change(monitor, data)
        except Exception as exc:
            self._monitors.pop(model, None)
            log.exception("processing failed for model %s", model)
            if not isinstance(data, list) or len(data) < 2:
                await self._dead_letter_failure(exc, value, key, message)
                return None
            monitor, alerts = await self._apply_one_by_one(model, change, data, key=key, message=message)
        monitor.mark_applied(source, message.offset)
        monitor.remember_batch(batch_id)
        self.save(monitor)
        self.metrics.processing.observe(time.perf_counter() - started)
        await self.publish_alerts(alerts)
        await self.publish_retrain_requests(monitor)
        return monitor

    async def _apply_one_by_one(
        self,
        model: str,
        change: Callable[[ModelMonitor, Any], list[dict[str, Any]]],
        items: list[Any],
        *,
        key: bytes | None,
        message: Any,
    ) -> tuple[ModelMonitor, list[dict[str, Any]]]:
        # The slow path, taken only after a batch raised: a snapshot after every
        # good item, so a bad one is undone without undoing the good ones.
        monitor = self.monitor_for(model)
        good = _snapshot(monitor)
        alerts: list[dict[str, Any]] = []
        for item in items:
            try:
                raised = change(monitor, [item])
            except Exception as exc:
                monitor = ModelMonitor.from_dict(model, self.settings, orjson.loads(good), self.monitors)
                await self._dead_letter_failure(exc, _encode(item), key, message)
                continue
            alerts += raised
            good = _snapshot(monitor)
        self._monitors[model] = monitor
        return monitor, alerts

    async def _dead_letter_failure(self, exc: Exception, value: bytes | None, key: bytes | None, message: Any) -> None:
        reason = f"processing failed: {type(exc).__name__}: {exc}"
        await self.dead_letter(Reject(reason, "processing_error", value or b""), key, message)

    async def dead_letter(self, reject: Reject, key: bytes | None, message: Any) -> None:
        """Write one rejected input, with where it came from, to the dead-letter topic."""
        letter = dead_letter(reject, topic=message.topic, partition=message.partition, offset=message.offset, key=key)
        await self.deadletter_topic.send(key=key, value=orjson.dumps(letter))
        self.counters.dead_letters += 1
        self.metrics.dead_letters.labels(error_type=reject.error_type).inc()

    def count_events(self, model: str, n: int) -> None:
        """Count ``n`` events applied to ``model`` in the health counters and on /metrics."""
        self.counters.events += n
        self.metrics.events.labels(model=self.metrics.model_label(model)).inc(n)

    def report_state(self, monitor: ModelMonitor) -> None:
        """Export the model's feature-cap overflow and too-late counts; log the overflow once."""
        for version, v in monitor.versions.items():
            windows = v.windows
            labels = {"model": self.metrics.model_label(monitor.model), "model_version": version}
            if windows.too_late:
                self.metrics.late_events.labels(**labels).set(windows.too_late)
            if not windows.untracked_features:
                continue
            self.metrics.features_untracked.labels(**labels).set(windows.untracked_features)
            if (monitor.model, version) not in self._warned_caps:
                self._warned_caps.add((monitor.model, version))
                log.warning(
                    "model %s %s has more than max_features=%d features; %d not tracked (first: %s)",
                    monitor.model,
                    version,
                    self.settings.max_features,
                    windows.untracked_features,
                    ", ".join(windows.untracked_names[:5]),
                )

    def local_models(self) -> list[str]:
        """Models whose partition this worker actively owns (standby copies excluded)."""
        actives = {
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.settings.topics.events
        }
        models = (key.decode() for key in list(self.model_state.keys()))
        return [model for model in models if self.partition_of(model) in actives]

    def _exported_models(self) -> list[ModelMonitor]:
        if not self.ready:
            return []
        return [self.monitor_for(model) for model in self.local_models()]

    def _lag(self) -> list[tuple[str, int, int]]:
        consumer = self.app.consumer if self.ready else None
        inputs = (self.settings.topics.events, self.settings.topics.labels)
        out = []
        for tp in sorted(consumer.assignment() if consumer else ()):
            if tp.topic not in inputs:
                continue
            highwater = consumer.highwater(tp)
            read = self.read_offsets.get((tp.topic, tp.partition))
            if highwater is None or highwater < 0:
                continue
            out.append((tp.topic, tp.partition, max(0, highwater - (read + 1 if read is not None else 0))))
        return out

    async def publish_retrain_requests(self, monitor: ModelMonitor) -> None:
        """Publish the model's pending retraining requests, keyed by model."""
        for request in monitor.take_retrain_requests():
            await self.retrain_topic.send(key=monitor.model.encode(), value=orjson.dumps(request))
            log.warning("RETRAIN %s", request["message"])

    async def publish_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Publish alerts keyed by fingerprint, and count them."""
        for alert in alerts:
            await self.alerts_topic.send(key=alert["fingerprint"].encode(), value=orjson.dumps(alert))
            self.counters.alerts += 1
            self.recent_alerts.append(alert)
            model = self.metrics.model_label(alert["model"])
            self.metrics.alerts.labels(model=model, kind=alert["kind"], severity=alert["severity"]).inc()
            log.warning("ALERT %s", alert["message"])

    def process_events(self, monitor: ModelMonitor, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Update the model's windows and detectors, and keep its predictions for their labels."""
        events = self.privacy.prepare(events, monitor.model)
        return monitor.process(events) + self.join_predictions(monitor, events)

    def join_predictions(self, monitor: ModelMonitor, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Keep predictions with a request_id for their labels; join labels that came first."""
        self._apply_expired(monitor)
        if self.settings.join_predictions == "never" or not monitor.expects_labels:
            return []
        alerts: list[dict[str, Any]] = []
        for event in events:
            request_id = event.get("request_id")
            if request_id is None:
                continue
            outcome, joined = self.joiner.on_prediction(
                monitor.model, event["model_version"], request_id, event.get("prediction"), event["timestamp"]
            )
            if outcome != "stored":
                monitor.count_labels(outcome)
            if joined is not None:
                alerts += monitor.process_label(
                    joined.model_version, joined.label, joined.prediction, joined.label_time
                )
        return alerts

    def join_label(self, monitor: ModelMonitor, label: dict[str, Any]) -> list[dict[str, Any]]:
        """Match one label event with its prediction; return performance alerts."""
        self._apply_expired(monitor)
        if self.settings.join_predictions == "never":
            monitor.count_labels("ignored")
            return []
        monitor.expects_labels = True
        outcome, joined = self.joiner.on_label(monitor.model, label["request_id"], label["label"], label["timestamp"])
        monitor.count_labels(outcome)
        if joined is None:
            return []
        return monitor.process_label(joined.model_version, joined.label, joined.prediction, joined.label_time)

    def expire_join_entries(self) -> int:
        """Drop join entries past their TTL from the partitions this worker owns."""
        owned = set(self.local_models())
        expired = 0
        for key, model, outcome in self.joiner.expired():
            if model not in owned:
                continue
            partition = self.partition_of(model)
            self.label_join.data.pop(key, None)
            # A tombstone in the model's own changelog partition, as an agent would write.
            self.label_join.send_changelog(partition, key, None)
            counts = self._expired.setdefault(model, {})
            counts[outcome] = counts.get(outcome, 0) + 1
            expired += 1
        return expired

    def _apply_expired(self, monitor: ModelMonitor) -> None:
        # Expiry counts reach the model's state with its next record, inside an agent.
        for outcome, n in self._expired.pop(monitor.model, {}).items():
            monitor.count_labels(outcome, n)

    def partition_of(self, model: str) -> int:
        """The partition of the events topic that holds ``model``."""
        return self.app.producer.key_partition(self.settings.topics.events, model.encode()).partition

    def has_model(self, model: str) -> bool:
        """Whether this worker holds state for ``model``."""
        return self.model_state.get(model.encode()) is not None

    @property
    def ready(self) -> bool:
        """Partitions assigned and table recovery done."""
        app = self.app
        recovery = app.tables.recovery
        return bool(app.consumer and recovery.completed.is_set() and not recovery.in_recovery and not app.rebalancing)


def _snapshot(monitor: ModelMonitor) -> bytes:
    return orjson.dumps(monitor.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY)


def _encode(item: Any) -> bytes:
    return orjson.dumps(item, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=str)


def load_monitors(settings: Settings) -> MonitorConfig:
    """The monitor file named in the settings, or the built-in defaults."""
    return MonitorConfig.load(Path(settings.monitors_file)) if settings.monitors_file else MonitorConfig()


def create_app(settings: Settings) -> MonitorApp:
    """Build a worker app for ``settings``."""
    return MonitorApp(settings)

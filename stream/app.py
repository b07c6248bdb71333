"""The Faust app factory: topics, the state table, agents and web pages.

``create_app`` builds a fresh app per call (tests run several side by side);
the worker command runs the one it returns. All topics are created by
``stream.topics`` before the app starts, so Faust is told not to declare any.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import faust

from stream.config import Settings
from stream.metrics import WorkerMetrics
from stream.monitor import ModelMonitor
from stream.topics import MODEL_STATE_TABLE


@dataclass(slots=True)
class WorkerCounters:
    """What this worker process has done since it started."""

    records: int = 0
    events: int = 0
    dead_letters: int = 0
    alerts: int = 0
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters with the uptime."""
        return {
            "records": self.records,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "alerts": self.alerts,
            "uptime_s": round(time.time() - self.started_at, 3),
        }


class MonitorApp:
    """One worker's Faust app with its topics, table and per-model state."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.counters = WorkerCounters()
        os.makedirs(settings.data_path, exist_ok=True)
        self.metrics = WorkerMetrics()
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
            web_enabled=True,
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
        # Keys are the model name as raw bytes, exactly the record key: Faust routes
        # a query by hashing the serialized key, and a JSON-quoted key would hash
        # to another partition than the one the producer chose.
        self.model_state = self.app.Table(
            MODEL_STATE_TABLE, default=None, partitions=settings.partitions, key_type=bytes
        )
        self._monitors: dict[str, ModelMonitor] = {}
        # Imported here: the agent and page modules register themselves on this app.
        from stream.agents import ingest, web

        ingest.register(self)
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
            monitor = ModelMonitor(model, self.settings)
        else:
            monitor = ModelMonitor.from_dict(model, self.settings, stored)
        self._monitors[model] = monitor
        return monitor

    def save(self, monitor: ModelMonitor) -> None:
        """Write the model's state back to its changelog-backed table entry."""
        self.model_state[monitor.model.encode()] = monitor.to_dict()

    def local_models(self) -> list[str]:
        """Models whose partition this worker actively owns (standby copies excluded)."""
        actives = {
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.settings.topics.events
        }
        producer = self.app.producer
        out = []
        for key in list(self.model_state.keys()):
            model = key.decode() if isinstance(key, bytes) else key
            if producer.key_partition(self.settings.topics.events, model.encode()).partition in actives:
                out.append(model)
        return out

    def has_model(self, model: str) -> bool:
        """Whether this worker holds state for ``model``."""
        return self.model_state.get(model.encode()) is not None

    def forget(self, model: str) -> None:
        """Drop the cached state so the next record reloads it from the table."""
        self._monitors.pop(model, None)

    @property
    def ready(self) -> bool:
        """Partitions assigned and table recovery done."""
        app = self.app
        recovery = app.tables.recovery
        return bool(app.consumer and recovery.completed.is_set() and not recovery.in_recovery and not app.rebalancing)


def create_app(settings: Settings) -> MonitorApp:
    """Build a worker app for ``settings``."""
    return MonitorApp(settings)

"""The worker's Faust app: topics, tables, agents and pages, wired to the parts that do the work.

``create_app`` builds a fresh app per call (tests run several side by side);
the worker command runs the one it returns. All topics are created by
:mod:`stream.kafka.topics` before the app starts, so Faust is told not to
declare any.

The parts, each in its own module: :mod:`~stream.worker.admission` (which
records to apply), :mod:`~stream.worker.ingest` (applying them),
:mod:`~stream.worker.state_cache` (live model states),
:mod:`~stream.worker.checkpoint` (saving them, releasing records),
:mod:`~stream.worker.recovery` (poisoned batches) and
:mod:`~stream.worker.outputs` (alerts and dead letters out).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import faust
import orjson
import psutil
from faust.types import TP

from stream.kafka.topics import LABEL_JOIN_TABLE, MODEL_STATE_TABLE, model_partition
from stream.monitoring.label_join import (
    SEPARATOR,
    JsonEntries,
    LabelJoiner,
    ModelLabels,
    batch_expired,
    expand_join_record,
    is_batch_key,
    key_model,
)
from stream.monitoring.model_monitor import ModelMonitor
from stream.monitoring.monitor_file import MonitorConfig
from stream.monitoring.profiles import ProfileStore
from stream.privacy.noise import SliceNoise
from stream.settings import Settings
from stream.web.exporter import ModelSeriesCollector
from stream.web.metrics import WorkerMetrics
from stream.worker.admission import Admission
from stream.worker.changelog_writes import ChangelogWrites
from stream.worker.checkpoint import Checkpointer, HeldRecords
from stream.worker.counters import WorkerCounters
from stream.worker.faust_compat import (
    JOIN_ROCKSDB_OPTIONS,
    ExpandingTable,
    FetchedRecord,
    OffsetKeepingTable,
    active_partitions,
    rocksdb_store_url,
    store_get,
    store_put,
    store_scan,
    subscribe,
    tables_ready,
    use_worker_transport,
)
from stream.worker.ingest import Ingest
from stream.worker.intake import Intake
from stream.worker.outputs import Outputs
from stream.worker.stall import STALL_S, StallWatch
from stream.worker.state_cache import ModelStates

log = logging.getLogger(__name__)

SEPARATOR_BYTES = SEPARATOR.encode()

# Join entries checked for expiry between two turns of the event loop (about 15 ms of work).
EXPIRY_SLICE = 10_000


class MonitorApp:
    """One worker's Faust app with its topics and tables, and the parts that apply records to model states."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.monitors = load_monitors(settings)
        self.counters = WorkerCounters()
        if not settings.data_dir:
            remove_stopped_workers_folders(settings.data_root)
        os.makedirs(settings.data_path, exist_ok=True)
        self.metrics = WorkerMetrics(max_models=settings.metrics_max_models)
        self.noise = (
            SliceNoise(settings.slice_noise_epsilon, settings.slice_noise_budget)
            if settings.slice_noise_epsilon
            else None
        )
        self.metrics.registry.register(
            ModelSeriesCollector(self._exported_models, self._lag, self.metrics.model_label, self.noise)
        )
        self.app = _faust_app(settings)
        topics = settings.topics
        # Inference events and labels come in bulk, straight from the fetch (see stream.worker.intake).
        self.intake: Intake[Any] = Intake(
            settings.ingest_batch_records, max(1, round(settings.ingest_batch_mb * 2**20)), settings.ingest_wait_s
        )
        use_worker_transport(self.app, self.intake, frozenset({topics.events, topics.labels}))
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        self.events_topic = self.app.topic(topics.events, partitions=settings.partitions, **raw)
        self.labels_topic = self.app.topic(topics.labels, partitions=settings.partitions, **raw)
        subscribe(self.app, self.events_topic)
        subscribe(self.app, self.labels_topic)
        # Keys are the model name as raw bytes, exactly the record key: Faust routes
        # a query by hashing the serialized key, and a JSON-quoted key would hash
        # to another partition than the one the producer chose.
        # Values are compressed JSON written by the worker itself (see stream.worker.checkpoint).
        self.model_state = OffsetKeepingTable(
            self.app,
            name=MODEL_STATE_TABLE,
            default=None,
            beacon=self.app.tables.beacon,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
        )
        self.app.tables.add(self.model_state)
        # Predictions waiting for their labels (and labels for their predictions).
        # Entries are written at the model's checkpoints, in the model's
        # partition like everything else about it, one changelog record per
        # model and checkpoint (see stream.monitoring.label_join).
        # Values are the entries' JSON text, kept as bytes (see JsonEntries).
        # On disk by default: it holds an entry per prediction for label_ttl_s.
        on_disk = {"store": rocksdb_store_url(LABEL_JOIN_TABLE), "options": JOIN_ROCKSDB_OPTIONS}
        ttl_s = settings.label_ttl_s
        self.label_join = ExpandingTable(
            self.app,
            name=LABEL_JOIN_TABLE,
            expand=lambda key, value: expand_join_record(key, value, cutoff=time.time() - ttl_s),
            default=None,
            beacon=self.app.tables.beacon,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
            **(on_disk if settings.join_store == "rocksdb" else {}),
        )
        self.app.tables.add(self.label_join)
        # Every changelog write, until the next checkpoint confirms it.
        self.writes = ChangelogWrites()
        self.join_store = TableEntries(self.label_join, settings.partitions)
        self.joiner = LabelJoiner(JsonEntries(self.join_store), settings.label_ttl_s)
        self.labels = ModelLabels(self.joiner, settings.detection.join_predictions)
        profiles = ProfileStore(Path(settings.profile_dir) if settings.profile_dir else None)
        self.states = ModelStates(
            self.model_state,
            settings.detection,
            settings.state_cache_models,
            self.monitors,
            profiles,
            loaded=self._state_loaded,
        )
        held = HeldRecords(
            settings.checkpoint_interval_s,
            settings.checkpoint_max_records,
            settings.state_cache_models,
            release=FetchedRecord.ack_all,
            max_bytes=max(1, round(settings.checkpoint_max_mb * 2**20)),
        )
        self.checkpointer = Checkpointer(
            self.states, self.model_state, held, self.writes, self.counters, self.metrics, join_table=self.label_join
        )
        self.states.unsaved = self.checkpointer.unsaved
        self.outputs = Outputs(
            alerts=self.app.topic(topics.alerts, partitions=settings.partitions, **raw),
            retrain=self.app.topic(topics.retrain, partitions=settings.partitions, **raw),
            deadletter=self.app.topic(topics.deadletter, partitions=settings.partitions, **raw),
            counters=self.counters,
            metrics=self.metrics,
            max_features=settings.detection.max_features,
        )
        self.admission = Admission(lambda: self.app.consumer, self._count_refetch)
        self.ingest = Ingest(settings, self.admission, self.states, self.checkpointer, self.outputs, self.labels)
        self.checkpoint_clock: asyncio.Future[None] | None = None
        self.stall_watch = StallWatch(STALL_S)
        # Imported here: the agent and page modules register themselves on this app.
        from stream.web import pages
        from stream.worker import agents

        agents.register(self)
        pages.register(self)

    def _state_loaded(self, monitor: ModelMonitor) -> None:
        self.labels.settle_loaded(monitor)
        self.counters.state_loads += 1
        self.metrics.state_loads.inc()

    def monitor_for(self, model: str) -> ModelMonitor:
        """The model's live state (see :class:`~stream.worker.state_cache.ModelStates`)."""
        return self.states.get(model)

    async def checkpoint(self, force: bool = False) -> int:
        """Save the changed models when a checkpoint is due (or ``force``); returns how many were saved."""
        return await self.checkpointer.checkpoint(force)

    def forget_state(self) -> None:
        """Partitions revoked: the live states and their held records are dropped; the table is the truth."""
        self.checkpointer.revoke()

    @property
    def recent_alerts(self) -> Any:
        """The alerts this worker published lately, newest last."""
        return self.outputs.recent_alerts

    async def check_traffic(self) -> int:
        """Publish silence alerts of the live models this worker owns; returns how many.

        A model whose state was evicted from the cache is not checked: with
        more models than ``state_cache_models`` the quietest are the ones out.
        """
        if not self.ready:
            return 0
        now = time.time()
        owned = active_partitions(self.app, self.settings.topics.events)
        alerts = []
        for model in self.states.names():
            partition = self.partition_of(model)
            if partition not in owned or model in self.checkpointer.undone:
                continue
            found = self.states.cached(model).check_traffic(now)
            if found:
                # The alert changed the model's state: the next checkpoint saves it.
                self.checkpointer.held.mark(model, partition)
                alerts += found
        await self.outputs.publish_alerts(alerts)
        return len(alerts)

    async def expire_join_entries(self) -> int:
        """Drop join entries past their TTL from this worker's store; returns how many of its own it counted.

        In the partitions this worker owns, each expired entry is counted in
        its model's state, and a batch whose newest entry is past the TTL is
        deleted from the changelog (entries are deleted from the store alone:
        a worker reading the changelog back leaves out those past the TTL).
        In the others (standby copies) expired entries are only deleted.

        The keys are checked a slice at a time, with the event loop free in
        between: a pass over millions of entries at once had held it for
        seconds, alerts and records waiting.
        """
        if not self.ready:
            return 0
        owned = set(self.local_models())
        actives = active_partitions(self.app, self.settings.topics.events)
        # Read a slice at a time as the agents change the table between slices (see LabelJoiner.expired).
        scan = store_scan(self.label_join)
        now = time.time()
        cutoff = now - self.settings.label_ttl_s
        expired = 0
        while slice_ := list(itertools.islice(scan, EXPIRY_SLICE)):
            entries = []
            for key, value in slice_:
                if not is_batch_key(key):
                    entries.append((key, orjson.loads(value)))
                elif batch_expired(value, cutoff) and (partition := self.partition_of(key_model(key))) in actives:
                    # Deleted from the store once the broker has the tombstone.
                    self.writes.write(self.label_join, partition, key, None, when_stored=True)
            for key, model, outcome in self.joiner.expired(now, entries):
                partition = self.partition_of(model)
                if partition in actives:
                    if model not in owned or self.unsaved_join_entry(model, key):
                        continue
                    self.labels.count_expired(model, outcome)
                    expired += 1
                store_put(self.label_join, partition, key, None)
            await asyncio.sleep(0)
            if not self.ready:
                break  # a rebalance began: what this worker owns is no longer known
        return expired

    def unsaved_join_entry(self, model: str, key: bytes) -> bool:
        """Whether the model's live state has a newer entry for ``key`` than the table, not yet checkpointed."""
        if model not in self.states:
            return False
        request_id = key.decode(errors="replace").split(SEPARATOR, 1)[1]
        return request_id in self.states.cached(model).join_changes

    def local_models(self) -> list[str]:
        """Models whose partition this worker actively owns (standby copies excluded)."""
        actives = active_partitions(self.app, self.settings.topics.events)
        # Models seen since the last checkpoint are not in the table yet.
        models = dict.fromkeys([key.decode() for key in list(self.model_state.keys())] + self.states.names())
        return [model for model in models if self.partition_of(model) in actives]

    def partition_of(self, model: str) -> int:
        """The partition of the events topic that holds ``model`` (its partition count is checked at start)."""
        return model_partition(model, self.settings.partitions)

    def has_model(self, model: str) -> bool:
        """Whether this worker holds state for ``model``."""
        return model in self.states or self.model_state.get(model.encode()) is not None

    @property
    def ready(self) -> bool:
        """Partitions assigned and table recovery done."""
        return tables_ready(self.app)

    async def restart_stalled_fetches(self) -> int:
        """Fetch again the input partitions stalled with records waiting (see :mod:`stream.worker.stall`)."""
        if not self.ready:
            return 0
        consumer = self.app.consumer
        lags = {(topic, partition): lag for topic, partition, lag in self._lag()}
        # A partition with records in the intake, or held back while the intake is full, waits
        # for the ingest, which is behind (a long batch of a thousand models' checkpoints), not
        # for a stopped fetch. Found here, every few seconds, not counted per record on its way in.
        waiting = {(message.topic, message.partition) for message in self.intake.waiting()}
        waiting |= {(tp.topic, tp.partition) for tp in consumer.held_back()}
        read = self.ingest.read_offsets
        stalled = self.stall_watch.stalled(
            (key, read.get(key), 0 if key in waiting else lag) for key, lag in lags.items()
        )
        for topic, partition in stalled:
            tp = TP(topic, partition)
            found = consumer.fetch_report(tp)
            offset = await consumer.restart_fetch(tp)
            log.warning(
                "input partition %s[%d] read nothing for %g s with %d records waiting (%s); fetching it again from "
                "offset %s",
                topic,
                partition,
                self.stall_watch.stall_s,
                lags[(topic, partition)],
                found,
                offset,
            )
            self.counters.fetch_restarts += 1
            self.metrics.fetch_restarts.inc()
        return len(stalled)

    def _count_refetch(self) -> None:
        self.counters.refetches += 1
        self.metrics.refetches.inc()

    def _exported_models(self) -> list[ModelMonitor]:
        if not self.ready:
            return []
        # Only models within the metrics cap: the others get no series, and loading
        # them all would push the busy ones out of the state cache.
        known = self.metrics.model_label.known
        return [self.monitor_for(model) for model in self.local_models() if model in known]

    def _lag(self) -> list[tuple[str, int, int]]:
        consumer = self.app.consumer if self.ready else None
        inputs = (self.settings.topics.events, self.settings.topics.labels)
        out = []
        for tp in sorted(consumer.assignment() if consumer else ()):
            if tp.topic not in inputs:
                continue
            highwater = consumer.highwater(tp)
            read = self.ingest.read_offsets.get((tp.topic, tp.partition))
            if highwater is None or highwater < 0:
                continue
            out.append((tp.topic, tp.partition, max(0, highwater - (read + 1 if read is not None else 0))))
        return out


def _faust_app(settings: Settings) -> faust.App:
    return faust.App(
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


class TableEntries(Mapping):
    """The join table's local entries, read-only, each looked up in its model's partition (batches' times left out).

    The join table is written by the checkpointer alone, in each model's
    partition, once the model's state is saved (see
    :class:`~stream.worker.checkpoint.Checkpointer`), and by the expiry.
    """

    def __init__(self, table: Any, partitions: int) -> None:
        self.table = table
        self.partitions = partitions

    def partition_of(self, key: bytes) -> int:
        """The partition of the model the key belongs to (``model_partition`` caches it per model)."""
        return model_partition(key.partition(SEPARATOR_BYTES)[0].decode(errors="replace"), self.partitions)

    def __getitem__(self, key: bytes) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: bytes, default: Any = None) -> Any:
        value = store_get(self.table, self.partition_of(key), key)
        return default if value is None else value

    def __iter__(self) -> Iterator[bytes]:
        return (key for key, _ in store_scan(self.table) if not is_batch_key(key))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def remove_stopped_workers_folders(root: str) -> list[str]:
    """Delete the default data folders of workers no longer running (named by process id); returns them.

    Their label-join entries are in the changelog, and nobody reuses a default folder.
    """
    removed = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        if name.isdigit() and not psutil.pid_exists(int(name)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(name)
    return removed


def load_monitors(settings: Settings) -> MonitorConfig:
    """The monitor file named in the settings, or the built-in defaults."""
    return MonitorConfig.load(Path(settings.monitors_file)) if settings.monitors_file else MonitorConfig()


def create_app(settings: Settings) -> MonitorApp:
    """Build a worker app for ``settings``."""
    return MonitorApp(settings)

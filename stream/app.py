"""The Faust app factory: topics, the state table, agents and web pages.

``create_app`` builds a fresh app per call (tests run several side by side);
the worker command runs the one it returns. All topics are created by
``stream.topics`` before the app starts, so Faust is told not to declare any.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson

from stream.alerts import unreadable_state_alert
from stream.checkpoint import ChangelogWrites, HeldRecords, decode_state, encode_state
from stream.codec import Reject, TimeBounds, decode_label, decode_record
from stream.config import Settings
from stream.deadletter import dead_letter
from stream.exporter import ModelSeriesCollector
from stream.labels import LabelJoiner
from stream.metrics import WorkerMetrics
from stream.monitor import ModelMonitor, StateError
from stream.monitors import MonitorConfig
from stream.privacy.protect import EventPrivacy
from stream.sequence import Order
from stream.topics import LABEL_JOIN_TABLE, MODEL_STATE_TABLE
from stream.transport import use_worker_transport

log = logging.getLogger(__name__)

# Work between two chances for the event loop to run (see MonitorApp.ingest): about
# STEP_S seconds, as many events as that takes lately, within these bounds.
STEP_S = 0.02
STEP_EVENTS = (50, 5_000)


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
    checkpoints: int = 0
    refetches: int = 0
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
            "checkpoints": self.checkpoints,
            "refetches": self.refetches,
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
        use_worker_transport(self.app)
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
        # Values are compressed JSON written by the worker itself (see stream.checkpoint).
        self.model_state = self.app.Table(
            MODEL_STATE_TABLE,
            default=None,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
        )
        # Predictions waiting for their labels (and labels for their predictions).
        # Entries are written while handling the model's own records, so they
        # live in the model's partition like everything else about it.
        self.label_join = self.app.Table(LABEL_JOIN_TABLE, default=None, partitions=settings.partitions, key_type=bytes)
        # Every changelog write, until the next checkpoint confirms it.
        self.writes = ChangelogWrites()
        self.join_store = PartitionStore(self.label_join, self.writes)
        self.joiner = LabelJoiner(self.join_store, settings.label_ttl_s)
        self._expired: dict[str, dict[str, int]] = {}
        # Live states, least recently used first, with the table bytes each was loaded from or saved as.
        self._monitors: OrderedDict[str, tuple[ModelMonitor, bytes | None]] = OrderedDict()
        self.held = HeldRecords(settings.checkpoint_interval_s, settings.checkpoint_max_records)
        self._step_events = STEP_EVENTS[1]
        self.checkpoint_clock: asyncio.Future[None] | None = None
        # The models of the checkpoint under way, until each is saved.
        self._saving: dict[str, Any] = {}
        # One checkpoint at a time, and none while a poisoned batch is undone.
        self._checkpointing = asyncio.Lock()
        # Counts the revocations: a checkpoint that outlives one must not save or release.
        self._generation = 0
        # Models whose live state a poisoned batch may have half-updated, until it is undone.
        self._undoing: set[str] = set()
        self._warned_caps: set[tuple[str, str]] = set()
        # Imported here: the agent and page modules register themselves on this app.
        from stream.agents import checkpoints, ingest, labels, web

        ingest.register(self)
        labels.register(self)
        checkpoints.register(self)
        web.register(self)

    def monitor_for(self, model: str) -> ModelMonitor:
        """The model's live state, rebuilt from the table when the cache is stale.

        The cached object is trusted while the table still holds the very
        bytes it was loaded from or last saved as; after a rebalance or a
        restart the table wins.
        """
        stored = self.model_state.get(model.encode())
        cached = self._monitors.get(model)
        if cached is not None and cached[1] is stored:
            self._monitors.move_to_end(model)
            return cached[0]
        if stored is None:
            monitor = ModelMonitor(model, self.settings, self.monitors)
        else:
            try:
                monitor = ModelMonitor.from_dict(model, self.settings, decode_state(stored), self.monitors)
            except (StateError, zlib.error, orjson.JSONDecodeError) as exc:
                # Never dead-letter a model's records for ever because its state is old or damaged.
                log.warning("state of model %s cannot be read (%s): monitoring it afresh", model, exc)
                monitor = ModelMonitor(model, self.settings, self.monitors)
                monitor.notices.append(unreadable_state_alert(model, stored, str(exc)))
        self._cache(model, monitor, stored)
        return monitor

    def _cache(self, model: str, monitor: ModelMonitor, stored: bytes | None) -> None:
        self._monitors[model] = (monitor, stored)
        self._monitors.move_to_end(model)
        excess = len(self._monitors) - self.settings.state_cache_models
        if excess > 0:
            # Least recently used first; a model with unsaved changes stays until its checkpoint.
            busy = self.held.models.keys() | self._saving.keys()
            for name in [m for m in self._monitors if m not in busy][:excess]:
                del self._monitors[name]

    def save(self, model: str, partition: int, monitor: ModelMonitor) -> None:
        """Write the model's state, with the offsets it covers, to its table entry and changelog.

        The sequence number counts the checkpoints.
        """
        monitor.seq += 1
        key = model.encode()
        blob = encode_state(monitor.to_dict())
        self.writes.write(self.model_state, partition, key, blob)
        self._cache(model, monitor, blob)

    async def checkpoint(self, force: bool = False) -> int:
        """Save every model changed since the last checkpoint, when one is due; release its records.

        Records are released only once the broker has confirmed every state
        write (and label-join write) made so far. Lets the event loop run
        every 50 ms or so: with hundreds of busy models a checkpoint takes
        seconds. What the agents apply meanwhile is held for the next
        checkpoint. A failed checkpoint holds its records again for the next
        one. Returns how many models were saved.
        """
        if self._checkpointing.locked() and not force:
            return 0
        async with self._checkpointing:
            if not self.held.changed or not (force or self.held.due()):
                return 0
            generation = self._generation
            taken = self._saving = self.held.take()
            paused = time.perf_counter()
            try:
                # The cache never evicts a model with held records, so each is there.
                monitors = {model: self._monitors[model][0] for model in taken}
                for model, held in list(taken.items()):
                    if model in self._undoing:
                        # Saved once the poisoned batch is undone, at the next checkpoint.
                        self.held.restore({model: taken.pop(model)})
                        continue
                    self.save(model, held.partition, monitors[model])
                    if time.perf_counter() - paused > 0.05:
                        await asyncio.sleep(0)
                        paused = time.perf_counter()
                        if generation != self._generation:
                            return 0
                await self.writes.confirm()
            except Exception:
                log.exception("checkpoint failed; its %d models' records stay uncommitted until the next", len(taken))
                if generation == self._generation:
                    self.held.restore(taken)
                return 0
            finally:
                self._saving = {}
            # Partitions revoked meanwhile: the records are their next owner's to apply again.
            if generation != self._generation:
                return 0
            for held in taken.values():
                self.held.release(held.records)
            self.counters.checkpoints += 1
            return len(taken)

    def forget_state(self) -> None:
        """Drop the cached states and what they held (partitions revoked: the table is the truth)."""
        self._generation += 1
        dropped = self.held.drop()
        if dropped:
            log.warning("%d input records not yet checkpointed are left for the partitions' next owner", dropped)
        self._monitors.clear()

    async def ingest(self, records: list[Any]) -> None:
        """Apply a batch of inference-events records, each model's records together.

        The work is done in steps of about ``STEP_S`` seconds, letting the
        event loop run between them: a batch of big envelopes would otherwise
        hold it for seconds, and with it health checks, scrapes and the
        heartbeats that keep the worker in its group.
        """
        admitted = await self.admit(records)
        by_model: dict[str, list[RecordInput]] = {}
        decoded_since_pause = 0
        for record, first_read in admitted:
            decoded = decode_record(record.key, record.value, self.time_bounds)
            # A record read again had its rejects dead-lettered the first time.
            for reject in decoded.rejects if first_read else ():
                await self.dead_letter(reject, record.key, record.message)
            if decoded.events:
                model = decoded.events[0]["model"]
                by_model.setdefault(model, []).append(RecordInput(record, decoded.events, decoded.batch_id))
            decoded_since_pause += len(decoded.events) + len(decoded.rejects)
            if decoded_since_pause >= STEP_EVENTS[1]:
                decoded_since_pause = 0
                await asyncio.sleep(0)
        for model, inputs in by_model.items():
            for step in _steps(inputs, self._step_events):
                started = time.perf_counter()
                monitor, events = await self.apply(model, self.process_events, step)
                if monitor is not None:
                    self.report_state(monitor)
                    self.count_events(model, events)
                if events:
                    # Events with long texts to scan cost a hundred times what plain ones do.
                    per_event = (time.perf_counter() - started) / events
                    self._step_events = int(min(max(STEP_S / per_event, STEP_EVENTS[0]), STEP_EVENTS[1]))
                await asyncio.sleep(0)
        # Counted once handled, so a health check that sees them counted sees their effects too.
        first_reads = sum(first_read for _, first_read in admitted)
        self.counters.records += first_reads
        self.metrics.records.inc(first_reads)
        await self.checkpoint()

    async def admit(self, records: list[Any]) -> list[tuple[Any, bool]]:
        """The records to apply, each with whether it is read for the first time.

        Only records of partitions this worker owns, in offset order, without holes.

        Records fetched before a rebalance may reach the agent after it: those
        of partitions now owned by another worker are its to apply, from its
        own state. At a hole in a partition's offsets (records Faust dropped,
        see :mod:`stream.sequence`) the partition is read again from the hole.
        The consumer never commits the records left out (they are not
        ``taken``): they will come again, here or to the next owner.
        """
        consumer = self.app.consumer
        owned = consumer.assignment()
        admitted = []
        for record in records:
            message = record.message
            verdict = consumer.order.check(message.tp, message.offset) if message.tp in owned else Order.DROP
            if verdict in (Order.APPLY, Order.APPLY_AGAIN, Order.APPLY_AFTER_GAP):
                admitted.append((record, verdict is not Order.APPLY_AGAIN))
                consumer.taken.add(message)
                if verdict is Order.APPLY_AFTER_GAP:
                    await consumer.skip_gap(message.tp, consumer.order.gaps[message.tp])
                continue
            if verdict is Order.REFETCH:
                hole = consumer.order.holes[message.tp]
                log.warning(
                    "records %d to %d of %s never reached the worker (dropped around a rebalance); reading them again",
                    hole.start,
                    hole.end - 1,
                    message.tp,
                )
                self.counters.refetches += 1
                self.metrics.refetches.inc()
                await consumer.seek(message.tp, hole.start)
        return admitted

    async def ingest_label(self, record: Any) -> None:
        """Apply one inference-labels record."""
        admitted = await self.admit([record])
        if not admitted:
            return
        _, first_read = admitted[0]
        label, problem = decode_label(record.key, record.value, self.time_bounds)
        if problem is not None:
            if first_read:
                await self.dead_letter(problem, record.key, record.message)
            return
        assert label is not None
        _, applied = await self.apply(label["model"], self.join_labels, [RecordInput(record, [label], None)])
        self.counters.labels += applied
        await self.checkpoint()

    def input_of(self, record: Any) -> RecordInput | None:
        """A held record decoded again, to be re-applied (what it rejected was dead-lettered already)."""
        if record.message.topic == self.settings.topics.labels:
            label, _ = decode_label(record.key, record.value, self.time_bounds)
            return None if label is None else RecordInput(record, [label], None)
        decoded = decode_record(record.key, record.value, self.time_bounds)
        return RecordInput(record, decoded.events, decoded.batch_id) if decoded.events else None

    def change_for(self, record: Any) -> Change:
        """What applies a record of this record's topic to a model's state."""
        return self.join_labels if record.message.topic == self.settings.topics.labels else self.process_events

    async def apply(self, model: str, change: Change, inputs: list[RecordInput]) -> tuple[ModelMonitor | None, int]:
        """Run ``change(monitor, items)`` on the model's state with the items of ``inputs``; publish its alerts.

        A record whose offset the state already covers is a replay (the
        worker crashed or lost the partition before its checkpoint) and is
        skipped; so is an envelope whose ``batch_id`` was applied already
        (the SDK sent it again after losing the acknowledgement). Applied
        records are held until the model's next checkpoint. One poisoned
        item must not stop the worker or leave the state half-updated: see
        :meth:`_recover`. Returns the monitor (None when nothing was applied)
        and how many items were applied.
        """
        started = time.perf_counter()
        # Join entries live in the model's partition, like everything else about it.
        self.join_store.partition = inputs[0].record.message.partition
        try:
            monitor = self.monitor_for(model)
        except Exception as exc:
            log.exception("state of model %s cannot be loaded", model)
            for inp in inputs:
                await self._dead_letter_failure(exc, inp.record.value, inp.record.key, inp.record.message)
            return None, 0
        await self.publish_alerts(monitor.take_notices())
        fresh = []
        for inp in inputs:
            message = inp.record.message
            self.read_offsets[(message.topic, message.partition)] = message.offset
            if monitor.already_applied(f"{message.topic}:{message.partition}", message.offset):
                self.counters.replayed += 1
                self.metrics.replayed.inc()
            elif monitor.seen_batch(inp.batch_id):
                self.counters.duplicate_batches += 1
                self.metrics.duplicate_batches.inc()
            else:
                _mark_applied(monitor, inp)
                fresh.append(inp)
        if not fresh:
            return None, 0
        try:
            alerts = change(monitor, [item for inp in fresh for item in inp.items])
            applied = sum(len(inp.items) for inp in fresh)
        except Exception:
            log.exception("processing failed for model %s", model)
            monitor, alerts, applied = await self._recover(model, change, fresh)
        for inp in fresh:
            self.held.hold(model, inp.record.message.partition, inp.record, frozenset(inp.skipped))
        self.metrics.processing.observe(time.perf_counter() - started)
        await self.publish_alerts(alerts)
        await self.publish_retrain_requests(monitor)
        return monitor, applied

    async def _recover(
        self, model: str, change: Change, fresh: list[RecordInput]
    ) -> tuple[ModelMonitor, list[dict[str, Any]], int]:
        # The slow path, taken only after a batch raised. The live state may be
        # half-updated, so it is rebuilt from the last checkpoint, and the records
        # applied since then are applied again (they went through before; their
        # alerts are out already). Then the new records go one at a time, and
        # item by item within a record that raises, with a snapshot after each
        # good step, so only what raises is undone and dead-lettered.
        self._undoing.add(model)
        try:
            async with self._checkpointing:
                return await self._redo(model, change, fresh)
        finally:
            self._undoing.discard(model)

    async def _redo(
        self, model: str, change: Change, fresh: list[RecordInput]
    ) -> tuple[ModelMonitor, list[dict[str, Any]], int]:
        self._monitors.pop(model, None)
        monitor = self.monitor_for(model)
        # Consecutive held records of one kind go in one call, without what was dead-lettered.
        replays: list[tuple[Change, list[Any]]] = []
        for record, skipped in self.held.records_of(model):
            replay = self.input_of(record)
            if replay is None:
                continue
            _mark_applied(monitor, replay)
            items = [item for i, item in enumerate(replay.items) if i not in skipped]
            redo = self.change_for(record)
            if replays and replays[-1][0] == redo:
                replays[-1][1].extend(items)
            else:
                replays.append((redo, items))
        try:
            for redo, items in replays:
                redo(monitor, items)
        except Exception:
            # They went through before: a detector that decides otherwise the second time is broken.
            log.exception("re-applying model %s's records since its checkpoint failed; they are not counted", model)
            self._monitors.pop(model, None)
            monitor = self.monitor_for(model)
        good = _snapshot(monitor)
        alerts: list[dict[str, Any]] = []
        applied = 0
        for inp in fresh:
            _mark_applied(monitor, inp)
            try:
                alerts += change(monitor, inp.items)
                applied += len(inp.items)
                good = _snapshot(monitor)
                continue
            except Exception:
                monitor = self._restore(model, good)
                _mark_applied(monitor, inp)
            for index, item in enumerate(inp.items):
                try:
                    alerts += change(monitor, [item])
                except Exception as exc:
                    monitor = self._restore(model, good)
                    inp.skipped.add(index)
                    await self._dead_letter_failure(exc, _encode(item), inp.record.key, inp.record.message)
                    continue
                applied += 1
                good = _snapshot(monitor)
        self._cache(model, monitor, self.model_state.get(model.encode()))
        return monitor, alerts, applied

    def _restore(self, model: str, snapshot: bytes) -> ModelMonitor:
        return ModelMonitor.from_dict(model, self.settings, orjson.loads(snapshot), self.monitors)

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
        # Models seen since the last checkpoint are not in the table yet.
        models = dict.fromkeys([key.decode() for key in list(self.model_state.keys())] + list(self._monitors))
        return [model for model in models if self.partition_of(model) in actives]

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

    def join_labels(self, monitor: ModelMonitor, labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Match label events with their predictions; return performance alerts."""
        self._apply_expired(monitor)
        alerts: list[dict[str, Any]] = []
        for label in labels:
            if self.settings.join_predictions == "never":
                monitor.count_labels("ignored")
                continue
            monitor.expects_labels = True
            outcome, joined = self.joiner.on_label(
                monitor.model, label["request_id"], label["label"], label["timestamp"]
            )
            monitor.count_labels(outcome)
            if joined is not None:
                alerts += monitor.process_label(
                    joined.model_version, joined.label, joined.prediction, joined.label_time
                )
        return alerts

    def expire_join_entries(self) -> int:
        """Drop join entries past their TTL from the partitions this worker owns."""
        owned = set(self.local_models())
        expired = 0
        for key, model, outcome in self.joiner.expired():
            if model not in owned:
                continue
            # A tombstone in the model's own changelog partition, as an agent would write.
            self.writes.write(self.label_join, self.partition_of(model), key, None)
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
        return model in self._monitors or self.model_state.get(model.encode()) is not None

    @property
    def ready(self) -> bool:
        """Partitions assigned and table recovery done."""
        app = self.app
        recovery = app.tables.recovery
        return bool(app.consumer and recovery.completed.is_set() and not recovery.in_recovery and not app.rebalancing)


Change = Callable[[ModelMonitor, list[Any]], list[dict[str, Any]]]


@dataclass(slots=True)
class RecordInput:
    """One input record (a Faust event) and the items it brings: events, or one label."""

    record: Any
    items: list[Any]
    batch_id: str | None
    # Items that raised and were dead-lettered instead of applied.
    skipped: set[int] = field(default_factory=set)


def _steps(inputs: list[RecordInput], events: int) -> list[list[RecordInput]]:
    """``inputs`` in order, in runs of about ``events`` events (a bigger record makes a run alone).

    >>> runs = _steps([RecordInput(None, [0] * n, None) for n in (3, 3, 5, 1)], events=6)
    >>> [[len(i.items) for i in run] for run in runs]
    [[3, 3], [5, 1]]
    """
    runs: list[list[RecordInput]] = [[]]
    size = 0
    for inp in inputs:
        if runs[-1] and size + len(inp.items) > events:
            runs.append([])
            size = 0
        runs[-1].append(inp)
        size += len(inp.items)
    return runs


def _mark_applied(monitor: ModelMonitor, inp: RecordInput) -> None:
    message = inp.record.message
    monitor.mark_applied(f"{message.topic}:{message.partition}", message.offset)
    monitor.remember_batch(inp.batch_id)


class PartitionStore(MutableMapping):
    """A Faust table written in a partition chosen by the caller, not by the current event.

    The ingest agent applies several records of several partitions at once,
    so "the current event" is no guide to where a model's entries belong.
    """

    def __init__(self, table: Any, writes: ChangelogWrites) -> None:
        self.table = table
        self.writes = writes
        self.partition = 0

    def __getitem__(self, key: bytes) -> Any:
        return self.table.data[key]

    def __setitem__(self, key: bytes, value: Any) -> None:
        self.writes.write(self.table, self.partition, key, value)

    def __delitem__(self, key: bytes) -> None:
        if key not in self.table.data:
            raise KeyError(key)
        self.writes.write(self.table, self.partition, key, None)

    def __iter__(self):
        return iter(self.table.data)

    def __len__(self) -> int:
        return len(self.table.data)


def _snapshot(monitor: ModelMonitor) -> bytes:
    return orjson.dumps(monitor.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def _encode(item: Any) -> bytes:
    return orjson.dumps(item, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=str)


def load_monitors(settings: Settings) -> MonitorConfig:
    """The monitor file named in the settings, or the built-in defaults."""
    return MonitorConfig.load(Path(settings.monitors_file)) if settings.monitors_file else MonitorConfig()


def create_app(settings: Settings) -> MonitorApp:
    """Build a worker app for ``settings``."""
    return MonitorApp(settings)

"""Applying input records to the model states: decode, skip what a state already holds, apply, hold.

Each model's share of a batch is applied together, in steps of about
``STEP_S`` seconds with the event loop let run between them: a batch of big
envelopes would otherwise hold it for seconds, and with it health checks,
scrapes and the heartbeats that keep the worker in its group.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from stream.contracts.codec import TimeBounds, decode_label, decode_record
from stream.monitoring.label_join import ModelLabels
from stream.monitoring.model_monitor import ModelMonitor
from stream.privacy.protect import EventPrivacy
from stream.settings import Settings
from stream.worker.admission import Admission
from stream.worker.checkpoint import Checkpointer
from stream.worker.outputs import Outputs
from stream.worker.records import Change, RecordInput, mark_applied, steps
from stream.worker.recovery import Recovery
from stream.worker.state_cache import ModelStates

log = logging.getLogger(__name__)

# Work between two chances for the event loop to run: about STEP_S seconds,
# as many events as that takes lately, within these bounds. The detectors cost less
# per event in bigger batches (docs/perf/history.md), and 50 ms still
# answers health checks and scrapes within a tenth of a second.
STEP_S = 0.05
STEP_EVENTS = (50, 5_000)


class Ingest:
    """Takes admitted records to the model states and their alerts to :class:`Outputs`."""

    def __init__(
        self,
        settings: Settings,
        admission: Admission,
        states: ModelStates,
        checkpointer: Checkpointer,
        outputs: Outputs,
        labels: ModelLabels,
    ) -> None:
        self.settings = settings
        self.time_bounds = TimeBounds(settings.max_future_s, settings.earliest_timestamp)
        self.privacy = EventPrivacy(settings)
        self.admission = admission
        self.states = states
        self.checkpointer = checkpointer
        self.outputs = outputs
        self.labels = labels
        self.counters = outputs.counters
        self.metrics = outputs.metrics
        self.recovery = Recovery(states, checkpointer, self.decode, self.change_for, self._dead_letter_item)
        # The last offset admitted per input partition, for the lag on /metrics and the stall watch.
        self.read_offsets: dict[tuple[str, int], int] = {}
        self._step_events = STEP_EVENTS[1]

    async def batch(self, records: list[Any]) -> None:
        """Apply a batch from the intake, model by model: its events together, then its labels; start a due checkpoint.

        A model's labels go after its events so that a label and its prediction in one batch join at once.
        Each model's records are decoded just before they are applied, so that only one model's decoded
        events are held at a time, not a whole take's.
        """
        admitted = await self.admission.admit(records)
        labels_topic = self.settings.topics.labels
        # By record key, the model's name: a record whose items name another model is rejected as it is decoded.
        by_key: dict[bytes | None, tuple[list[tuple[Any, bool]], list[tuple[Any, bool]]]] = {}
        event_records = 0
        for record, first_read in admitted:
            message = record.message
            self.read_offsets[(message.topic, message.partition)] = message.offset
            is_label = message.topic == labels_topic
            event_records += first_read and not is_label
            by_key.setdefault(record.key, ([], []))[is_label].append((record, first_read))
        # Model by model, so that a batch with more models than the state cache holds reads
        # each state back once, not once for its events and again for its labels.
        for events_of_key, labels_of_key in by_key.values():
            events = await self._decode_all(events_of_key)
            labels = await self._decode_all(labels_of_key)
            if events or labels:
                await self._apply_model((events or labels)[0].items[0]["model"], events, labels)
        # Counted once handled, so a health check that sees them counted sees their effects too.
        self.counters.records += event_records
        self.metrics.records.inc(event_records)
        # Not awaited: records fetched while the states are encoded and confirmed wait for no broker round trip.
        self.checkpointer.start()

    async def _decode_all(self, records: list[tuple[Any, bool]]) -> list[RecordInput]:
        """The records' items to apply, in order; what they reject is dead-lettered (once: not when read again)."""
        inputs = []
        decoded_since_pause = 0
        for record, first_read in records:
            inp, rejects = self._decode(record)
            for reject in rejects if first_read else ():
                await self.outputs.dead_letter(reject, record.key, record.message)
            if inp is not None:
                inputs.append(inp)
                decoded_since_pause += len(inp.items)
            decoded_since_pause += len(rejects)
            if decoded_since_pause >= STEP_EVENTS[1]:
                decoded_since_pause = 0
                await asyncio.sleep(0)
        return inputs

    async def _apply_model(self, model: str, events: list[RecordInput], labels: list[RecordInput]) -> None:
        """Apply one model's share of a batch: its events in steps, then its labels."""
        for step in steps(events, self._step_events) if events else ():
            started = time.perf_counter()
            monitor, applied = await self.apply(model, self.process_events, step)
            if monitor is not None:
                self.outputs.report_state(monitor)
                self.outputs.count_events(model, applied)
            if applied:
                # Events with long texts to scan cost a hundred times what plain ones do.
                per_event = (time.perf_counter() - started) / applied
                self._step_events = int(min(max(STEP_S / per_event, STEP_EVENTS[0]), STEP_EVENTS[1]))
            await self.checkpointer.checkpoint_if_full(monitor)
            await asyncio.sleep(0)
        if labels:
            monitor, applied = await self.apply(model, self.labels.on_labels, labels)
            self.counters.labels += applied
            await self.checkpointer.checkpoint_if_full(monitor)
            await asyncio.sleep(0)

    def decode(self, record: Any) -> RecordInput | None:
        """A held record decoded again, to be re-applied (what it rejected was dead-lettered already)."""
        return self._decode(record)[0]

    def _decode(self, record: Any) -> tuple[RecordInput | None, list[Any]]:
        """The record's items (None when it has none to apply), and what it rejected, by its topic."""
        if record.message.topic == self.settings.topics.labels:
            label, problem = decode_label(record.key, record.value, self.time_bounds)
            return (None if label is None else RecordInput(record, [label], None)), (
                [] if problem is None else [problem]
            )
        decoded = decode_record(record.key, record.value, self.time_bounds)
        inp = RecordInput(record, decoded.events, decoded.batch_id) if decoded.events else None
        return inp, decoded.rejects

    def change_for(self, record: Any) -> Change:
        """What applies a record of this record's topic to a model's state."""
        return self.labels.on_labels if record.message.topic == self.settings.topics.labels else self.process_events

    def process_events(self, monitor: ModelMonitor, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Update the model's windows and detectors, and keep its predictions for their labels."""
        events = self.privacy.prepare(events, monitor.model)
        return monitor.process(events) + self.labels.on_events(monitor, events)

    async def apply(self, model: str, change: Change, inputs: list[RecordInput]) -> tuple[ModelMonitor | None, int]:
        """Run ``change(monitor, items)`` on the model's state with the items of ``inputs``; publish its alerts.

        A record whose offset the state already covers is a replay (the
        worker crashed or lost the partition before its checkpoint) and is
        skipped; so is an envelope whose ``batch_id`` was applied already
        (the SDK sent it again after losing the acknowledgement). Applied
        records are held until the model's next checkpoint. One poisoned
        item must not stop the worker or leave the state half-updated: see
        :mod:`stream.worker.recovery`. Returns the monitor (None when nothing
        was applied) and how many items were applied.
        """
        started = time.perf_counter()
        try:
            monitor = self.states.get(model)
        except Exception as exc:
            log.exception("state of model %s cannot be loaded", model)
            for inp in inputs:
                await self.outputs.dead_letter_failure(exc, inp.record.value, inp.record.key, inp.record.message)
            return None, 0
        await self.outputs.publish_alerts(monitor.take_notices())
        fresh = self._fresh(model, monitor, inputs)
        if not fresh:
            return None, 0
        try:
            alerts = change(monitor, [item for inp in fresh for item in inp.items])
            applied = sum(len(inp.items) for inp in fresh)
        except Exception:
            log.exception("processing failed for model %s", model)
            monitor, alerts, applied = await self.recovery.recover(model, change, fresh)
        for inp in fresh:
            self.checkpointer.held.hold(
                model, inp.record.message.partition, inp.record, frozenset(inp.skipped), inp.size
            )
        self.metrics.processing.observe(time.perf_counter() - started)
        await self.outputs.publish_alerts(alerts)
        await self.outputs.publish_retrain_requests(monitor)
        return monitor, applied

    def _fresh(self, model: str, monitor: ModelMonitor, inputs: list[RecordInput]) -> list[RecordInput]:
        """The inputs the state does not hold yet (by offset, or by envelope id), marked as applied.

        A replay that only the live state holds (its model has changes no
        checkpoint has saved yet) is held like the record it repeats, with
        none of its items to apply again: Faust commits an offset once any copy
        of its record is acknowledged, and the first copy, held, no longer
        keeps the offset back once the second is acknowledged.
        """
        fresh = []
        for inp in inputs:
            message = inp.record.message
            if monitor.already_applied(inp.source, message.offset):
                self.counters.replayed += 1
                self.metrics.replayed.inc()
                if self.checkpointer.unsaved(model):
                    every_item = frozenset(range(len(inp.items)))
                    self.checkpointer.held.hold(model, message.partition, inp.record, every_item, inp.size)
            elif monitor.seen_batch(inp.batch_id):
                self.counters.duplicate_batches += 1
                self.metrics.duplicate_batches.inc()
            else:
                mark_applied(monitor, inp)
                fresh.append(inp)
        return fresh

    async def _dead_letter_item(self, exc: Exception, value: bytes, inp: RecordInput) -> None:
        await self.outputs.dead_letter_failure(exc, value, inp.record.key, inp.record.message)

"""The worker's parts without a broker: the state cache, checkpoints, admission of records, and recovery.

Records are Faust's own ConsumerMessage objects (their reference counts decide
the commit); the table is the part of a Faust table these modules use, an
in-memory store whose changelog sends resolve when the test says so.
"""

import asyncio

import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from stream.monitoring.model_monitor import ModelMonitor
from stream.settings import DetectionSettings, Settings
from stream.worker.admission import Admission
from stream.worker.app import MonitorApp
from stream.worker.checkpoint import ChangelogWrites, Checkpointer, HeldRecords, decode_state
from stream.worker.records import RecordInput
from stream.worker.recovery import Recovery
from stream.worker.state_cache import ModelStates


class Table:
    """A table's store and its changelog; each send is a future the broker resolves (or fails)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.sent: list[tuple[int, bytes, object, asyncio.Future]] = []
        self.fail = False

    def get(self, key):
        return self.data.get(key)

    def send_changelog(self, partition, key, value):
        future = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(ConnectionError("broker gone"))
        else:
            future.set_result(None)
        self.sent.append((partition, key, value, future))
        return future


class Record:
    """What the worker uses of a Faust event: the message, key and value, and ``ack``."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes = b"{}") -> None:
        self.message = ConsumerMessage(topic, partition, offset, 0.0, 0, [], b"m", value, None)
        self.key, self.value = b"m", value
        self.acked = 0

    def ack(self) -> None:
        self.acked += 1


def _event(i: int, **extra) -> dict:
    return {"model": "m", "model_version": "1", "timestamp": 1000.0 + i, "latency_ms": 10.0 + i % 5, **extra}


def _parts(max_models: int = 2, max_records: int = 1000):
    table = Table()
    states = ModelStates(table, DetectionSettings(), max_models)
    held = HeldRecords(interval_s=3600, max_records=max_records)
    checkpointer = Checkpointer(states, table, held, ChangelogWrites())
    states.pinned = checkpointer.busy
    return table, states, checkpointer


def _apply(states, checkpointer, model, record, events):
    monitor = states.get(model)
    monitor.process(events)
    monitor.mark_applied(f"{record.message.topic}:{record.message.partition}", record.message.offset)
    checkpointer.held.hold(model, record.message.partition, record)
    return monitor


def test_the_cache_never_evicts_a_model_whose_changes_are_not_saved_nor_the_one_just_loaded():
    _, states, checkpointer = _parts(max_models=1)
    busy = _apply(states, checkpointer, "busy", Record("events", 0, 0), [_event(0)])
    for name in ("a", "b", "c"):
        states.get(name)
    assert states.cached("busy") is busy
    assert "a" not in states and "b" not in states and "c" in states


def test_more_changed_models_than_the_cache_holds_are_all_saved():
    async def run():
        table, states, checkpointer = _parts(max_models=2)
        records = [Record("events", 0, i) for i in range(5)]
        for i, record in enumerate(records):
            _apply(states, checkpointer, f"m{i}", record, [_event(i)])
        return table, records, await checkpointer.checkpoint(force=True)

    table, records, saved = asyncio.run(run())
    assert saved == 5 and sorted(table.data) == [f"m{i}".encode() for i in range(5)]
    assert all(r.acked == 1 for r in records)


def test_a_checkpoint_falls_due_once_as_many_models_changed_as_the_cache_holds():
    # Changed states cannot leave the cache until saved: without this, a batch of a
    # thousand models kept a thousand states in memory whatever the cache's size.
    held = HeldRecords(interval_s=3600, max_records=1000, max_models=3)
    for i in range(2):
        held.hold(f"m{i}", 0, Record("events", 0, i))
        held.hold(f"m{i}", 0, Record("events", 0, 10 + i))  # a model's second record is no new model
    assert not held.due()
    held.hold("m2", 0, Record("events", 0, 2))
    assert held.due()
    assert not HeldRecords(interval_s=3600, max_records=1000).due()  # nothing changed: never due


def test_a_checkpoint_saves_each_changed_model_and_releases_its_records_once_confirmed():
    async def run():
        table, states, checkpointer = _parts()
        records = [Record("events", 3, offset) for offset in range(3)]
        for i, record in enumerate(records):
            _apply(states, checkpointer, "m", record, [_event(i)])
        assert [r.message.refcount for r in records] == [1, 1, 1]
        saved = await checkpointer.checkpoint(force=True)
        return table, records, saved, checkpointer

    table, records, saved, checkpointer = asyncio.run(run())
    assert saved == 1 and checkpointer.counters.checkpoints == 1
    [(partition, key, value, _)] = table.sent
    assert (partition, key) == (3, b"m")
    state = decode_state(value)
    assert state["seq"] == 1 and state["offsets"] == {"events:3": 2}
    assert [r.acked for r in records] == [1, 1, 1]
    assert checkpointer.held.changed == 0


def test_a_failed_checkpoint_releases_nothing_and_holds_its_records_for_the_next():
    async def run():
        table, states, checkpointer = _parts()
        first = Record("events", 0, 0)
        _apply(states, checkpointer, "m", first, [_event(0)])
        table.fail = True
        failed = await checkpointer.checkpoint(force=True)
        later = Record("events", 0, 1)
        _apply(states, checkpointer, "m", later, [_event(1)])
        table.fail = False
        held = [r for r, _ in checkpointer.held.records_of("m")]
        saved = await checkpointer.checkpoint(force=True)
        return first, later, failed, held, saved, checkpointer

    first, later, failed, held, saved, checkpointer = asyncio.run(run())
    assert failed == 0
    assert held == [first, later]
    assert saved == 1 and (first.acked, later.acked) == (1, 1)
    # What Prometheus's StreamMonitorCheckpointsFailing rule reads.
    exposed = checkpointer.metrics.render()
    assert b"stream_monitor_checkpoint_failures_total 1.0" in exposed
    assert b"stream_monitor_checkpoints_total 1.0" in exposed
    assert (checkpointer.counters.checkpoint_failures, checkpointer.counters.checkpoints) == (1, 1)


def test_a_checkpoint_outlived_by_a_revocation_releases_nothing():
    async def run():
        table, states, checkpointer = _parts()
        records = [Record("events", 0, i) for i in range(3)]
        for i, record in enumerate(records):
            _apply(states, checkpointer, f"m{i}", record, [_event(i)])
        # The revocation lands while the broker has not confirmed the writes yet.
        pending = asyncio.get_running_loop().create_future()
        table.send_changelog = lambda *args: pending
        running = asyncio.ensure_future(checkpointer.checkpoint(force=True))
        await asyncio.sleep(0)
        dropped = checkpointer.revoke()
        pending.set_result(None)
        return records, await running, dropped, states

    records, saved, dropped, states = asyncio.run(run())
    assert saved == 0 and dropped == 0
    assert [r.acked for r in records] == [0, 0, 0]
    assert states.names() == []


def test_a_model_being_undone_is_left_for_the_next_checkpoint():
    async def run():
        table, states, checkpointer = _parts()
        record = Record("events", 0, 0)
        _apply(states, checkpointer, "m", record, [_event(0)])
        checkpointer.undone.add("m")
        skipped = await checkpointer.checkpoint(force=True)
        sent_while_undone = len(table.sent)
        checkpointer.undone.discard("m")
        saved = await checkpointer.checkpoint(force=True)
        return record, skipped, sent_while_undone, saved, table

    record, skipped, sent_while_undone, saved, table = asyncio.run(run())
    assert (skipped, sent_while_undone) == (0, 0)
    assert saved == 1 and len(table.sent) == 1 and record.acked == 1


def _consumer(tmp_path, owned):
    async def build():
        return MonitorApp(Settings(data_dir=str(tmp_path))).app.consumer

    consumer = asyncio.run(build())
    consumer.assignment = lambda: owned
    consumer.sought = []

    async def seek_wait(partitions):
        consumer.sought.extend(partitions.items())

    # seek_back must go through seek_wait, which runs in the consumer's thread.
    consumer.seek_wait = seek_wait
    return consumer


def test_admission_applies_owned_partitions_in_order_and_reads_a_hole_again(tmp_path):
    mine = TP("events", 0)
    consumer = _consumer(tmp_path, {mine})
    consumer.order.expect(mine, 10)
    refetches = []
    admission = Admission(lambda: consumer, lambda: refetches.append(1))
    batch = [Record("events", 0, o) for o in (10, 11, 14, 15)] + [Record("events", 1, 3)]

    admitted = asyncio.run(admission.admit(batch))
    assert [(r.message.offset, first) for r, first in admitted] == [(10, True), (11, True)]
    assert consumer.sought == [(mine, 12)] and refetches == [1]
    # Only what was admitted may be committed.
    assert {m.offset for m in consumer.taken} == {10, 11}

    again = [Record("events", 0, o) for o in (11, 12, 13, 14)]
    admitted = asyncio.run(admission.admit(again))
    assert [(r.message.offset, first) for r, first in admitted] == [(11, False), (12, True), (13, True), (14, True)]


def test_admission_refuses_a_consumer_without_the_worker_transport():
    class Plain:
        pass

    with pytest.raises(TypeError, match="use_worker_transport"):
        asyncio.run(Admission(Plain).admit([]))


def test_recovery_dead_letters_only_the_item_that_raises_and_keeps_the_rest():
    async def run():
        _, states, checkpointer = _parts()
        earlier = Record("events", 0, 0)
        _apply(states, checkpointer, "m", earlier, [_event(i) for i in range(5)])
        dead: list = []

        def change(monitor: ModelMonitor, items: list) -> list:
            # The first half of the batch goes in before the poisoned item raises.
            monitor.process([i for i in items if "poison" not in i])
            if any("poison" in i for i in items):
                raise ValueError("poisoned")
            return []

        def decode(record):
            return RecordInput(record, [_event(i) for i in range(5)], None)

        async def dead_letter(exc, value, inp):
            dead.append((str(exc), value, inp.record.message.offset))

        recovery = Recovery(states, checkpointer, decode, lambda record: change, dead_letter)
        fresh = [RecordInput(Record("events", 0, 1), [_event(5), _event(6, poison=1), _event(7)], None)]
        # As the ingest agent: the batch went half in, then raised.
        with pytest.raises(ValueError):
            change(states.get("m"), fresh[0].items)
        monitor, _, applied = await recovery.recover("m", change, fresh)
        return monitor, applied, dead, fresh, checkpointer

    monitor, applied, dead, fresh, checkpointer = asyncio.run(run())
    assert applied == 2 and fresh[0].skipped == {1}
    [(reason, value, offset)] = dead
    assert reason == "poisoned" and b'"poison":1' in value and offset == 1
    # Five held events re-applied from the (empty) checkpoint, plus the two good new ones; never the half batch twice.
    assert monitor.versions["1"].events == 7
    assert monitor.offsets == {"events:0": 1}
    assert not checkpointer.undone


def test_a_state_saved_by_the_checkpointer_is_what_the_cache_loads_after_a_restart():
    async def run():
        table, states, checkpointer = _parts()
        _apply(states, checkpointer, "m", Record("events", 0, 0), [_event(i) for i in range(10)])
        await checkpointer.checkpoint(force=True)
        return table

    table = asyncio.run(run())
    restarted = ModelStates(table, DetectionSettings(), max_models=10)
    monitor = restarted.get("m")
    assert monitor.versions["1"].events == 10 and monitor.seq == 1
    assert monitor.already_applied("events:0", 0)


def test_waiting_out_the_changelog_backlog_keeps_a_failed_write_for_the_checkpoint_to_raise():
    async def run():
        loop = asyncio.get_running_loop()
        writes = ChangelogWrites()
        failed = loop.create_future()
        failed.set_exception(ConnectionError("the broker refused the record"))
        stored = [loop.create_future() for _ in range(3)]
        for sent in stored:
            sent.set_result(None)
        waiting = loop.create_future()
        writes.unconfirmed = [failed, *stored, waiting]
        loop.call_later(0.01, waiting.set_result, None)
        await writes.ebb(limit=0)
        # Everything stored is let go; the failure stays, or a checkpoint would release its records.
        assert writes.unconfirmed == [failed]
        with pytest.raises(ConnectionError):
            await writes.confirm()

    asyncio.run(run())

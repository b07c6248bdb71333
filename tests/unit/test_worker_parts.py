"""The worker's parts without a broker: the state cache, checkpoints, admission of records, and recovery.

Records are Faust's own ConsumerMessage objects (their reference counts decide
the commit); the table is the part of a Faust table these modules use, an
in-memory store whose changelog sends resolve when the test says so.
"""

import asyncio
import time
from collections.abc import Callable

import orjson
import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from stream.monitoring.label_join import JsonEntries, LabelJoiner, ModelLabels, is_batch_key, join_key
from stream.monitoring.model_monitor import ModelMonitor
from stream.settings import DetectionSettings, Settings
from stream.worker.admission import Admission
from stream.worker.app import MonitorApp
from stream.worker.changelog_writes import ChangelogWrites
from stream.worker.checkpoint import Checkpointer, HeldRecords
from stream.worker.records import RecordInput
from stream.worker.recovery import Recovery
from stream.worker.state_cache import ModelStates
from stream.worker.state_codec import decode_state


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

    def keep(self) -> None:
        # As a record whose intake reference is given back already: holding it takes another.
        self.message.incref()

    def ack(self) -> None:
        self.acked += 1


def _for_stand_ins(mon: MonitorApp) -> MonitorApp:
    """``mon`` with its checkpoints giving :class:`Record` stand-ins back one by one: they have no Faust consumer."""
    mon.checkpointer.held.release_all = lambda records: [record.ack() for record in records]
    return mon


def _event(i: int, **extra) -> dict:
    return {"model": "m", "model_version": "1", "timestamp": 1000.0 + i, "latency_ms": 10.0 + i % 5, **extra}


def _parts(max_models: int = 2, max_records: int = 1000):
    table = Table()
    states = ModelStates(table, DetectionSettings(), max_models)
    held = HeldRecords(interval_s=3600, max_records=max_records)
    checkpointer = Checkpointer(states, table, held, ChangelogWrites())
    states.unsaved = checkpointer.unsaved
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


def test_a_state_the_broker_lost_is_not_what_the_worker_reloads_after_a_rebalance():
    # A rebalance that keeps the partition keeps its in-memory store: a state write the broker
    # lost must not be in it, or the records it covered are skipped as replayed when read again.
    async def run():
        table, states, checkpointer = _parts()
        _apply(states, checkpointer, "m", Record("events", 0, 0), [_event(0)])
        await checkpointer.checkpoint(force=True)
        lost = Record("events", 0, 1)
        _apply(states, checkpointer, "m", lost, [_event(1)])
        table.fail = True
        failed = await checkpointer.checkpoint(force=True)
        live = states.get("m")
        checkpointer.revoke()
        return failed, live, states.get("m"), lost

    failed, live, reloaded, lost = asyncio.run(run())
    assert failed == 0
    assert live.already_applied("events:0", 1), "the live state keeps what the failed checkpoint held"
    assert reloaded.seq == 1 and not reloaded.already_applied("events:0", 1)
    assert lost.acked == 0


def test_a_state_write_confirmed_after_a_revocation_does_not_replace_the_state_reloaded_since():
    async def run():
        table, states, checkpointer = _parts()
        _apply(states, checkpointer, "m", Record("events", 0, 0), [_event(0)])
        late = asyncio.get_running_loop().create_future()
        table.send_changelog = lambda *args: late
        saving = asyncio.ensure_future(checkpointer.checkpoint(force=True))
        await asyncio.sleep(0)
        checkpointer.revoke()
        reloaded = states.get("m")
        reloaded.process([_event(1)])
        late.set_result(None)
        await saving
        return table, states, reloaded

    table, states, reloaded = asyncio.run(run())
    assert b"m" not in table.data
    assert states.get("m") is reloaded


def test_the_live_state_stays_trusted_while_its_checkpoint_waits_for_the_broker():
    async def run():
        table, states, checkpointer = _parts()
        monitor = _apply(states, checkpointer, "m", Record("events", 0, 0), [_event(0)])
        confirmed = asyncio.get_running_loop().create_future()
        table.send_changelog = lambda *args: confirmed
        saving = asyncio.ensure_future(checkpointer.checkpoint(force=True))
        await asyncio.sleep(0)
        during = states.get("m"), b"m" in table.data
        confirmed.set_result(None)
        saved = await saving
        return monitor, during, saved, states.get("m"), table

    monitor, (during, stored_during), saved, after, table = asyncio.run(run())
    assert during is monitor and not stored_during
    assert saved == 1 and after is monitor
    assert decode_state(table.data[b"m"])["seq"] == 1


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


JOIN_ALWAYS = DetectionSettings(join_predictions="always")


def _join_parts():
    """A worker's state and join tables, checkpointer and label join, over in-memory tables."""
    table, join_table = Table(), Table()
    states = ModelStates(table, JOIN_ALWAYS, max_models=10)
    checkpointer = Checkpointer(
        states, table, HeldRecords(interval_s=3600, max_records=1000), ChangelogWrites(), join_table=join_table
    )
    states.unsaved = checkpointer.unsaved
    labels = ModelLabels(LabelJoiner(JsonEntries(join_table.data)), mode="always")
    return table, join_table, states, checkpointer, labels


def _prediction(request_id: str) -> dict:
    return _event(0, request_id=request_id, prediction=1)


def _label(request_id: str) -> dict:
    return {"model": "m", "request_id": request_id, "label": 1, "timestamp": 2000.0}


def _apply_join(states, checkpointer, labels, record, items) -> ModelMonitor:
    """As the ingest applies a record of predictions or of labels to model ``m``'s state."""
    monitor = states.get("m")
    source = f"{record.message.topic}:{record.message.partition}"
    if monitor.already_applied(source, record.message.offset):
        return monitor
    monitor.mark_applied(source, record.message.offset)
    (labels.on_labels if record.message.topic == "labels" else labels.on_events)(monitor, items)
    checkpointer.held.hold("m", record.message.partition, record)
    return monitor


def _restarted(table, join_table):
    """A new worker over what the changelogs hold: the states, and the join table as it stood."""
    labels = ModelLabels(LabelJoiner(JsonEntries(join_table.data)), mode="always")
    states = ModelStates(table, JOIN_ALWAYS, max_models=10, loaded=labels.settle_loaded)
    checkpointer = Checkpointer(
        states, table, HeldRecords(interval_s=3600, max_records=1000), ChangelogWrites(), join_table=join_table
    )
    return states, checkpointer, labels


def test_a_join_entry_reaches_the_join_table_only_after_the_state_that_counts_it():
    # The crash this guards against: the label's join reached the join table, its model's
    # state did not; the restored state applied the label again and found it joined already.
    async def run():
        table, join_table, states, checkpointer, labels = _join_parts()
        prediction, label = Record("events", 0, 0), Record("labels", 0, 0)
        _apply_join(states, checkpointer, labels, prediction, [_prediction("r1")])
        assert join_table.data == {}
        await checkpointer.checkpoint(force=True)
        assert orjson.loads(join_table.data[join_key("m", "r1")])[0] == "P"
        _apply_join(states, checkpointer, labels, label, [_label("r1")])
        # Killed here, before the next checkpoint: the label's record was never committed.
        assert orjson.loads(join_table.data[join_key("m", "r1")])[0] == "P"
        states, checkpointer, labels = _restarted(table, join_table)
        _apply_join(states, checkpointer, labels, prediction, [_prediction("r1")])
        monitor = _apply_join(states, checkpointer, labels, label, [_label("r1")])
        await checkpointer.checkpoint(force=True)
        return monitor, join_table

    monitor, join_table = asyncio.run(run())
    assert monitor.labels == {"joined": 1}
    assert orjson.loads(join_table.data[join_key("m", "r1")])[0] == "D"


def test_join_entries_the_join_table_lost_come_back_from_the_state_saved_with_them():
    async def run():
        table, join_table, states, checkpointer, labels = _join_parts()
        _apply_join(states, checkpointer, labels, Record("events", 0, 0), [_prediction("r1"), _prediction("r2")])
        await checkpointer.checkpoint(force=True)
        # Killed after the state was stored and before the join table's changelog had the entries.
        join_table.data.clear()
        states, checkpointer, labels = _restarted(table, join_table)
        monitor = _apply_join(states, checkpointer, labels, Record("labels", 0, 0), [_label("r1")])
        return monitor

    assert asyncio.run(run()).labels == {"joined": 1}


def test_a_state_read_again_leaves_out_the_join_entries_the_join_table_has():
    # Its saved copy still holds them: written again at each load, a thousand models
    # cycling through the cache had carried every entry they ever wrote.
    async def run():
        table, join_table, states, checkpointer, labels = _join_parts()
        _apply_join(states, checkpointer, labels, Record("events", 0, 0), [_prediction("r1"), _prediction("r2")])
        await checkpointer.checkpoint(force=True)
        return table, join_table

    table, join_table = asyncio.run(run())
    assert decode_state(table.data[b"m"])["join_changes"].keys() == {"r1", "r2"}
    del join_table.data[join_key("m", "r2")]  # as if its write never reached the changelog
    states, _, _ = _restarted(table, join_table)
    assert list(states.get("m").join_changes) == ["r2"]


def test_a_state_keeps_its_join_entries_until_the_broker_has_them_in_the_join_table():
    async def run():
        table, join_table, states, checkpointer, labels = _join_parts()
        prediction = Record("events", 0, 0)
        monitor = _apply_join(states, checkpointer, labels, prediction, [_prediction("r1"), _prediction("r2")])
        pending = asyncio.get_running_loop().create_future()
        join_table.send_changelog = lambda *args: pending
        running = asyncio.ensure_future(checkpointer.checkpoint(force=True))
        for _ in range(5):
            await asyncio.sleep(0)
        # The state is stored and its records released; the join table's writes are not stored yet.
        released, kept_while_unconfirmed = prediction.acked, dict(monitor.join_changes)
        # r1's label comes before they are: its newer entry must stay for the next checkpoint.
        _apply_join(states, checkpointer, labels, Record("labels", 0, 0), [_label("r1")])
        pending.set_result(None)
        await running
        return released, kept_while_unconfirmed, dict(monitor.join_changes), table

    released, kept, after, table = asyncio.run(run())
    assert released == 1 and sorted(kept) == ["r1", "r2"]
    assert list(after) == ["r1"] and orjson.loads(after["r1"])[0] == "D"
    assert decode_state(table.data[b"m"])["join_changes"].keys() == {"r1", "r2"}


def test_a_state_with_too_many_join_entries_not_yet_stored_is_saved_at_once(monkeypatch):
    monkeypatch.setattr("stream.worker.checkpoint.MAX_JOIN_CHANGES", 3)

    async def run():
        _, join_table, states, checkpointer, labels = _join_parts()
        monitor = _apply_join(states, checkpointer, labels, Record("events", 0, 0), [_prediction("r1")])
        below = await checkpointer.checkpoint_if_full(monitor)
        monitor = _apply_join(
            states, checkpointer, labels, Record("events", 0, 1), [_prediction(f"s{i}") for i in range(3)]
        )
        full = await checkpointer.checkpoint_if_full(monitor)
        # Saved, sent and stored: forgotten before the next check, which has nothing to save.
        again = await checkpointer.checkpoint_if_full(monitor)
        return below, full, again, monitor, join_table

    below, full, again, monitor, join_table = asyncio.run(run())
    assert (below, full, again) == (False, True, False)
    assert monitor.join_changes == {}
    assert {key for key in join_table.data if not is_batch_key(key)} == {
        join_key("m", request_id) for request_id in ("r1", "s0", "s1", "s2")
    }
    # One changelog record per model and checkpoint, the first forced by the full state.
    assert [key for _, key, _, _ in join_table.sent] == [b"\x00m\x1f1"]


def test_a_poisoned_batch_undone_does_not_find_the_join_entries_of_its_own_first_try():
    async def run():
        _, _, states, checkpointer, labels = _join_parts()
        held_prediction = Record("events", 0, 0)
        _apply_join(states, checkpointer, labels, held_prediction, [_prediction("r1"), _prediction("r2")])

        def change(monitor: ModelMonitor, items: list) -> list:
            for item in items:
                if item.get("poison"):
                    raise ValueError("poisoned")
                labels.on_labels(monitor, [item])
            return []

        def decode(record):
            return RecordInput(record, [_prediction("r1"), _prediction("r2")], None)

        async def dead_letter(exc, value, inp):
            pass

        recovery = Recovery(states, checkpointer, decode, lambda record: labels.on_events, dead_letter)
        fresh = [RecordInput(Record("labels", 0, 0), [_label("r1"), {**_label("x"), "poison": 1}, _label("r2")], None)]
        monitor = states.get("m")
        monitor.mark_applied("labels:0", 0)
        with pytest.raises(ValueError):
            change(monitor, fresh[0].items)  # r1 joined, then the poison
        monitor, _, applied = await recovery.recover("m", change, fresh)
        return monitor, applied

    monitor, applied = asyncio.run(run())
    assert applied == 2
    assert monitor.labels == {"joined": 2}


def test_the_expiry_leaves_a_join_entry_a_live_state_changed_since_its_checkpoint(tmp_path):
    # The table's entry is older than the state's: a prediction past its TTL in the
    # table that a label has just joined must not be counted as never labelled too.
    async def build():
        return MonitorApp(Settings(data_dir=str(tmp_path)))

    app = asyncio.run(build())
    app.states.get("m").join_changes["r1"] = b'["D",0.0]'
    assert app.unsaved_join_entry("m", join_key("m", "r1"))
    assert not app.unsaved_join_entry("m", join_key("m", "r2"))
    assert not app.unsaved_join_entry("n", join_key("n", "r1"))


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


def test_a_batch_of_labels_for_more_models_than_the_cache_holds_checkpoints_as_it_goes(tmp_path):
    # A batch of labels touches models by the thousand; each changed state is pinned in
    # memory until saved, so without checkpoints within the batch all of them stayed live.
    async def build():
        return _for_stand_ins(MonitorApp(Settings(data_dir=str(tmp_path), state_cache_models=2, join_store="memory")))

    mon = asyncio.run(build())
    table, join_table = Table(), Table()
    mon.states.table = mon.checkpointer.table = table
    mon.checkpointer.join_table = join_table
    labels_tp = TP(mon.settings.topics.labels, 0)
    mon.app.consumer.assignment = lambda: {labels_tp}
    mon.app.consumer.order.expect(labels_tp, 0)
    records = [
        Record(labels_tp.topic, 0, i, orjson.dumps({"schema_version": 1, **label, "model": f"m{i}"}))
        for i, label in enumerate(_label(f"r{i}") | {"timestamp": time.time()} for i in range(7))
    ]
    for i, record in enumerate(records):
        record.key = record.message.key = f"m{i}".encode()
    most_live = 0
    get = mon.states.get

    def counting_get(model):
        nonlocal most_live
        monitor = get(model)
        most_live = max(most_live, len(mon.states.live))
        return monitor

    mon.states.get = counting_get
    asyncio.run(mon.ingest.batch(records))
    assert mon.counters.labels == 7
    assert most_live <= 2
    asyncio.run(mon.checkpointer.checkpoint(force=True))
    assert sorted(table.data) == [f"m{i}".encode() for i in range(7)]  # every state saved, none lost
    assert all(record.acked == 1 for record in records)


def test_a_batch_of_events_and_labels_for_more_models_than_the_cache_holds_reads_each_state_once(tmp_path):
    # Each model's events and then its labels, not every model's events and then every
    # model's labels: the second pass read back each state the first had evicted.
    async def build():
        return _for_stand_ins(
            MonitorApp(
                Settings(data_dir=str(tmp_path), state_cache_models=2, join_store="memory", detection=JOIN_ALWAYS)
            )
        )

    mon = asyncio.run(build())
    table, join_table = Table(), Table()
    mon.states.table = mon.checkpointer.table = table
    mon.checkpointer.join_table = join_table
    mon.joiner.store = JsonEntries(join_table.data)
    events_tp, labels_tp = TP(mon.settings.topics.events, 0), TP(mon.settings.topics.labels, 0)
    mon.app.consumer.assignment = lambda: {events_tp, labels_tp}
    mon.app.consumer.order.expect(events_tp, 0)
    mon.app.consumer.order.expect(labels_tp, 0)
    now = time.time()

    def record(tp, offset, model, item):
        item = {"schema_version": 1, **item, "model": model}
        if tp == events_tp:
            item["event_id"] = f"e{offset}"
        out = Record(tp.topic, 0, offset, orjson.dumps(item))
        out.key = out.message.key = model.encode()
        return out

    first = [record(events_tp, i, f"m{i}", _prediction(f"r0-{i}") | {"timestamp": now}) for i in range(5)]
    asyncio.run(mon.ingest.batch(first))
    asyncio.run(mon.checkpointer.checkpoint(force=True))
    loads = mon.counters.state_loads

    second = [record(events_tp, 5 + i, f"m{i}", _prediction(f"r1-{i}") | {"timestamp": now}) for i in range(5)]
    second += [record(labels_tp, i, f"m{i}", _label(f"r1-{i}") | {"timestamp": now}) for i in range(5)]
    asyncio.run(mon.ingest.batch(second))

    assert mon.counters.events == 10 and mon.counters.labels == 5
    assert mon.joiner.counts["joined"] == 5  # each label met its prediction of the same batch
    assert mon.counters.state_loads - loads == 5


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


def _events_app(tmp_path, **settings) -> tuple[MonitorApp, Table, Callable[..., Record]]:
    """A whole app over a stand-in table, one events partition, and ``read(offset, model="m")``: an event there."""
    mon = _for_stand_ins(MonitorApp(Settings(data_dir=str(tmp_path), join_store="memory", **settings)))
    table = Table()
    mon.states.table = mon.checkpointer.table = table
    events_tp = TP(mon.settings.topics.events, 0)
    mon.app.consumer.assignment = lambda: {events_tp}
    mon.app.consumer.order.expect(events_tp, 0)
    now = time.time()

    def read(offset: int, model: str = "m") -> Record:
        event = {
            **_event(offset),
            "schema_version": 1,
            "model": model,
            "timestamp": now,
            "prediction": 1,
            "event_id": f"e{offset}",
        }
        out = Record(events_tp.topic, 0, offset, orjson.dumps(event))
        out.key = out.message.key = model.encode()
        return out

    return mon, table, read


def test_the_ingest_goes_on_while_its_checkpoint_waits_for_the_broker(tmp_path):
    # The ingest waited for each due checkpoint, broker round trip included, and what was
    # fetched meanwhile waited with it: most of an alert's delay at a steady load.
    async def run():
        mon, table, read = _events_app(tmp_path)
        mon.checkpointer.held.interval_s = 0.0  # due at every batch
        confirmed = asyncio.get_running_loop().create_future()
        sent = table.send_changelog
        table.send_changelog = lambda *args: (sent(*args), confirmed)[1]
        first, second = [read(0), read(1)], [read(2), read(3)]
        await asyncio.wait_for(mon.ingest.batch(first), 5)
        for _ in range(3):
            await asyncio.sleep(0)  # the checkpoint is under way, its write sent
        assert len(table.sent) == 1 and mon.checkpointer.running is not None
        await asyncio.wait_for(mon.ingest.batch(second), 5)
        meanwhile = (mon.counters.events, [r.acked for r in first + second], mon.checkpointer.held.count)
        confirmed.set_result(None)
        await mon.checkpointer.running
        confirmed_then = [r.acked for r in first + second]
        await mon.checkpointer.checkpoint(force=True)
        return meanwhile, confirmed_then, [r.acked for r in first + second]

    meanwhile, confirmed_then, finally_ = asyncio.run(run())
    assert meanwhile == (4, [0, 0, 0, 0], 2)  # applied, none released, the second batch held
    assert confirmed_then == [1, 1, 0, 0]  # the first checkpoint's records only: its state covers them
    assert finally_ == [1, 1, 1, 1]


def _ingest_during_a_pending_checkpoint(mon, table, first, then) -> tuple[bool, int]:
    """Apply ``first`` (its checkpoint starts, the broker holds its writes), then ``then``.

    Whether the second batch was still waiting 0.2 s later, and the events applied in the end.
    """

    async def run():
        confirmed = asyncio.get_running_loop().create_future()
        table.send_changelog = lambda *args: confirmed
        await asyncio.wait_for(mon.ingest.batch(first), 5)
        await asyncio.sleep(0)
        more = asyncio.ensure_future(mon.ingest.batch(then))
        await asyncio.sleep(0.2)
        waiting = not more.done()
        confirmed.set_result(None)
        await asyncio.wait_for(more, 5)
        return waiting, mon.counters.events

    return asyncio.run(run())


def test_the_ingest_waits_for_a_running_checkpoint_once_it_holds_twice_its_limit(tmp_path):
    mon, table, read = _events_app(tmp_path, checkpoint_interval_s=3600, checkpoint_max_records=2)
    # Two held: due, started; four more while it waits for the broker.
    waiting, events = _ingest_during_a_pending_checkpoint(
        mon, table, [read(0), read(1)], [read(i) for i in range(2, 6)]
    )
    assert waiting and events == 6


def test_the_ingest_waits_for_a_running_checkpoint_once_it_holds_twice_its_limit_in_bytes(tmp_path):
    # Large envelopes fill memory between two checkpoints long before their count reaches its limit.
    _, _, probe = _events_app(tmp_path / "probe")
    size = len(probe(0).value)
    mon, table, read = _events_app(tmp_path, checkpoint_interval_s=3600, checkpoint_max_mb=2 * size / 2**20)
    waiting, events = _ingest_during_a_pending_checkpoint(
        mon, table, [read(0), read(1)], [read(i) for i in range(2, 6)]
    )
    assert waiting and events == 6


def test_the_ingest_waits_for_a_running_checkpoint_before_more_unsaved_models_than_the_cache_holds(tmp_path):
    # A state being saved cannot leave memory either: without the wait, the cache held its
    # size in states being saved and as many again changed meanwhile.
    mon, table, read = _events_app(tmp_path, state_cache_models=2)
    mon.checkpointer.held.interval_s = 0.0
    waiting, events = _ingest_during_a_pending_checkpoint(mon, table, [read(0, "a")], [read(1, "b")])
    assert waiting and events == 2


def test_a_record_read_again_before_its_state_is_saved_is_released_only_with_that_state(tmp_path):
    # After a broker restart the consumer read the backlog again from the last commit while
    # the states covering it were not saved: the second copies, acknowledged at once, let
    # Faust commit offsets that no saved state covered, and a stop before the next
    # checkpoint lost them.
    async def run():
        mon, _, read = _events_app(tmp_path, checkpoint_interval_s=3600)
        await mon.ingest.batch([read(0), read(1)])
        await mon.checkpoint(force=True)
        await mon.ingest.batch([read(2), read(3)])
        # Read again from the commit: 0 and 1 are saved, 2 and 3 only in the live state.
        again = [read(offset) for offset in range(4)]
        await mon.ingest.batch(again)
        held = [copy.message.refcount for copy in again]
        before = [copy.acked for copy in again]
        await mon.checkpoint(force=True)
        after = [copy.acked for copy in again]
        # Every change saved: a third copy has nothing to wait for.
        third = [read(offset) for offset in range(4)]
        await mon.ingest.batch(third)
        return mon, held, before, after, [copy.message.refcount for copy in third]

    mon, held, before, after, third = asyncio.run(run())
    assert mon.counters.replayed == 8
    assert held == [1, 1, 1, 1] and before == [0, 0, 0, 0]
    assert after == [1, 1, 1, 1]
    assert third == [0, 0, 0, 0]
    assert mon.states.get("m").versions["1"].events == 4

"""Faust's internals in one module: the worker's consumer (short fetch wait, no read offsets for inputs,
only taken records committed), and the import-time check of every private name it needs."""

import asyncio
import re
import time
import tomllib
from pathlib import Path

import aiokafka
import faust
import pytest
from aiokafka.structs import ConsumerRecord
from faust.events import Event
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from stream.monitoring.label_join import join_batch, join_key
from stream.settings import Settings
from stream.worker.app import MonitorApp
from stream.worker.faust_compat import (
    FETCH_MAX_WAIT_MS,
    TESTED_AIOKAFKA,
    TESTED_FAUST,
    FaustIncompatible,
    FetchedRecord,
    MemoryStoreKeepingOffsets,
    check_faust,
    store_get,
    store_put,
    store_scan,
)
from stream.worker.offset_order import PartitionOrder


def test_the_worker_consumer_waits_at_most_the_short_fetch_wait(tmp_path):
    async def build():
        mon = MonitorApp(Settings(data_dir=str(tmp_path)))
        consumer = mon.app.consumer._thread._create_worker_consumer(mon.app.transport)
        return consumer._fetch_max_wait_ms

    assert FETCH_MAX_WAIT_MS < 1500
    assert asyncio.run(build()) == FETCH_MAX_WAIT_MS


def test_the_worker_consumer_keeps_no_read_offset_for_input_partitions(tmp_path):
    # Faust drops a record below the last offset read as a duplicate; after a seek back
    # that dropped the very records read again (see stream.worker.offset_order).
    async def build():
        mon = MonitorApp(Settings(data_dir=str(tmp_path)))
        return mon.app.consumer

    consumer = asyncio.run(build())
    events = TP(consumer.app.conf.id, 0)
    consumer._read_offset[events] = 41
    consumer._read_offset.update({events: 42})
    assert consumer._read_offset[events] is None
    assert isinstance(consumer.order, PartitionOrder)


def _acking_consumer(tmp_path):
    """A worker's consumer, and the events topic, whose acknowledged records count for the commit."""

    async def build():
        return MonitorApp(Settings(data_dir=str(tmp_path)))

    mon = asyncio.run(build())
    topic = mon.settings.topics.events
    # As Faust's conductor does once the agents subscribe.
    mon.app.topics._acking_topics.add(topic)
    return mon.app.consumer, topic


def test_an_input_record_the_agent_never_took_in_is_not_counted_for_the_commit(tmp_path):
    # Faust acknowledges records it skipped itself around a rebalance; their offsets must
    # not be committed: the worker reads them again from the hole they leave.
    consumer, topic = _acking_consumer(tmp_path)
    skipped, taken = (ConsumerMessage(topic, 0, offset, 0.0, 0, [], b"m", b"{}", None) for offset in (7, 8))
    consumer.taken.add(taken)
    assert consumer.ack(skipped) is False
    assert skipped.acked
    consumer.ack(taken)
    assert taken.acked
    assert consumer._acked[TP(topic, 0)] == [8]


def test_a_held_record_keeps_the_reference_the_intake_took_and_its_offset_is_committed_once_released(tmp_path):
    consumer, topic = _acking_consumer(tmp_path)

    def taken(offset: int) -> FetchedRecord:
        message = ConsumerMessage(topic, 0, offset, 0.0, 0, [], b"m", b"{}", None)
        # As take_intake does with what it hands to the ingest.
        consumer.taken.add(message)
        message.incref()
        return FetchedRecord(message, consumer)

    held, passed, held_twice = taken(1), taken(2), taken(3)
    held.keep()
    held_twice.keep()
    held_twice.keep()
    for record in (held, passed, held_twice):
        record.give_back()
    # Only the record nothing holds is done when the batch is.
    assert [r.message.refcount for r in (held, passed, held_twice)] == [1, 0, 2]
    assert consumer._acked[TP(topic, 0)] == [2]
    held.ack()
    held_twice.ack()
    assert consumer._acked[TP(topic, 0)] == [2, 1]
    held_twice.ack()
    assert consumer._acked[TP(topic, 0)] == [2, 1, 3]


def test_acknowledging_records_together_leaves_the_consumer_as_faust_acknowledging_each_does(tmp_path):
    # Faust's own Message.ack is the oracle: the same records, acknowledged one by one on one
    # consumer and together on another, must leave the same offsets to commit.
    def scenario(consumer, topic):
        def message(offset: int, *, references: int = 1, taken: bool = True, topic: str = topic):
            m = ConsumerMessage(topic, offset % 2, offset, 0.0, 0, [], b"m", b"{}", None)
            consumer.track_message(m)
            if taken:
                consumer.taken.add(m)
            m.incref(references)
            return m

        consumer._committed_offset[TP(topic, 0)] = 4
        changelog = f"{consumer.app.conf.id}-model-states-changelog"
        consumer.app.topics._acking_topics.add(changelog)
        acked_before = message(9, references=2)
        consumer.ack(acked_before)  # as Faust does with the records it skips
        duplicate = message(7)
        messages = [
            message(2),  # below the committed offset: done, not counted
            message(6),
            message(8, references=2),  # still referenced once after
            message(10, taken=False),  # never taken in: done, not counted
            message(11, topic="not-acking"),
            message(12, topic=changelog, taken=False),  # changelogs count without being taken
            acked_before,
            duplicate,
            duplicate,  # held twice, released twice
            message(7),  # an offset counted already
        ]
        duplicate.incref()
        return messages

    one_by_one, topic = _acking_consumer(tmp_path / "one")
    together, _ = _acking_consumer(tmp_path / "together")
    expected = scenario(one_by_one, topic)
    for message in expected:
        message.ack(one_by_one)
    got = scenario(together, topic)
    together.ack_all(got)

    def state(consumer, messages):
        return (
            [(m.acked, m.refcount) for m in messages],
            {tp: list(offsets) for tp, offsets in consumer._acked.items() if offsets},
            {tp: set(index) for tp, index in consumer._acked_index.items() if index},
            consumer._n_acked,
            sorted((m.topic, m.offset) for m in consumer._unacked_messages),
        )

    assert state(together, got) == state(one_by_one, expected)
    acked, counted, *_ = state(together, got)
    assert acked[2] == (False, 1) and counted  # the scenario does exercise both outcomes


def test_a_faust_without_a_private_name_the_worker_needs_stops_it_with_one_line(monkeypatch):
    from faust.transport.consumer import Consumer

    monkeypatch.delattr(Consumer, "_add_gap")
    with pytest.raises(FaustIncompatible) as raised:
        check_faust()
    message = str(raised.value)
    assert "\n" not in message
    assert f"faust-streaming {faust.__version__}" in message and "Consumer._add_gap" in message
    assert f"faust-streaming=={TESTED_FAUST}" in message


def test_a_changed_signature_is_refused_too(monkeypatch):
    from faust.transport.consumer import Consumer

    monkeypatch.setattr(Consumer, "_new_offset", lambda self, tp, extra: None)
    with pytest.raises(FaustIncompatible, match=r"Consumer\._new_offset\(tp\)"):
        check_faust()


@pytest.mark.parametrize("join_store", ["rocksdb", "memory"])
def test_the_label_join_is_read_and_written_per_partition_outside_any_event(tmp_path, join_store):
    mon = MonitorApp(Settings(data_dir=str(tmp_path), join_store=join_store))
    table = mon.label_join
    store_put(table, 1, b"m\x1fa", b"1")
    store_put(table, 2, b"n\x1fb", b"2")
    store_put(table, 2, b"n\x1fc", b"3")
    store_put(table, 2, b"n\x1fc", None)
    assert store_get(table, 1, b"m\x1fa") == b"1"
    assert store_get(table, 2, b"n\x1fc") is None
    assert sorted(store_scan(table)) == [(b"m\x1fa", b"1"), (b"n\x1fb", b"2")]
    if join_store == "rocksdb":
        # On disk, a database per partition: a scan of partition 2 sees its own keys only.
        assert type(table.data).__module__ == "faust.stores.rocksdb"
        assert list(store_scan(table, {2})) == [(b"n\x1fb", b"2")]
        assert sorted(p.name for p in (tmp_path / "v1" / "tables").glob("*.db")) == [
            "label-join-1.db",
            "label-join-2.db",
        ]
    else:
        # Faust's in-memory store, keeping the changelog offsets it holds.
        assert isinstance(table.data, MemoryStoreKeepingOffsets)


def test_the_model_states_are_kept_in_memory_with_their_changelog_offsets(tmp_path):
    # Faust's own in-memory store claims no offset: every rebalance read the changelog from its start.
    mon = MonitorApp(Settings(data_dir=str(tmp_path)))
    assert isinstance(mon.model_state.data, MemoryStoreKeepingOffsets)


def test_the_installed_and_declared_versions_are_the_tested_ones():
    declared = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    worker = declared["project"]["optional-dependencies"]["worker"]
    assert f"faust-streaming=={TESTED_FAUST}" in worker and f"aiokafka=={TESTED_AIOKAFKA}" in worker
    assert (faust.__version__, aiokafka.__version__) == (TESTED_FAUST, TESTED_AIOKAFKA)


def test_private_faust_names_are_used_in_the_compatibility_module_only():
    root = Path(__file__).resolve().parents[2] / "stream"
    private = re.compile(
        r"\._(create_worker_consumer|new_consumer_thread|new_offset|read_offset|committed_offset|acked|gap|add_gap"
        r"|fetch_max_wait_ms|schedule_shutdown|db_for_partition|dbs)\b|\.(send_changelog|incref|assigned_actives|in_recovery)\b"
        r"|\btable\.data\b|\.tables\.recovery\b"
    )
    users = {
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if private.search(path.read_text()) and path.parent.name != "faust_compat"
    }
    assert users == set()


def test_the_command_line_reports_an_incompatible_faust_in_one_line(capsys):
    from stream.tools.cli_options import one_line_errors

    @one_line_errors
    def worker():
        raise FaustIncompatible("faust-streaming 0.99.0 with aiokafka 0.14.0 lacks what the worker relies on (x)")

    with pytest.raises(SystemExit) as exited:
        worker()
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "stream-monitor: error: faust-streaming 0.99.0 with aiokafka 0.14.0 lacks what the worker relies on (x)\n"
    )


def test_a_stalled_partition_faust_left_out_for_a_full_buffer_is_fetched_again(tmp_path):
    async def build():
        mon = MonitorApp(Settings(data_dir=str(tmp_path)))
        return mon, mon.app.consumer

    mon, consumer = asyncio.run(build())
    stalled, other = TP(mon.settings.topics.events, 0), TP(mon.settings.topics.events, 1)
    consumer._set_active_tps({stalled, other})
    consumer.on_buffer_full(stalled)
    assert consumer._get_active_partitions() == {other}
    # Nothing expected yet: no seek, only the fetch set is mended.
    assert asyncio.run(consumer.restart_fetch(stalled)) is None
    assert consumer._get_active_partitions() == {stalled, other}
    # A partition Faust paused on purpose (a rebalance) stays out.
    consumer.on_buffer_full(other)
    consumer.pause_partitions([other])
    asyncio.run(consumer.restart_fetch(other))
    assert other not in consumer._get_active_partitions()


def test_the_fetched_records_of_the_input_topics_go_to_the_intake_as_messages_and_faust_yields_the_rest(
    tmp_path, monkeypatch
):
    async def build():
        mon = MonitorApp(Settings(data_dir=str(tmp_path), ingest_batch_records=2))
        return mon, mon.app.consumer

    mon, consumer = asyncio.run(build())
    events, labels = (
        aiokafka.TopicPartition(mon.settings.topics.events, 0),
        aiokafka.TopicPartition(mon.settings.topics.labels, 1),
    )
    not_fetched, changelog = aiokafka.TopicPartition(events.topic, 2), aiokafka.TopicPartition("m-changelog", 0)

    def fetched(tp, offsets):
        return [
            ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"m", b"v" * offset, None, 1, offset, [])
            for offset in offsets
        ]

    records = {
        events: fetched(events, [3, 4, 5]),
        labels: fetched(labels, [7]),
        not_fetched: fetched(not_fetched, [1]),
        changelog: fetched(changelog, [9]),
    }

    async def faust_fetch(self, timeout):
        return dict(records), {TP(events.topic, 0), TP(labels.topic, 1), TP(changelog.topic, 0)}

    monkeypatch.setattr(driver.Consumer, "_wait_next_records", faust_fetch)
    # The consumer thread is not started here: the end offsets are read from it.
    monkeypatch.setattr(consumer, "highwater", lambda tp: 10)
    rest, _ = asyncio.run(consumer._wait_next_records(1.0))
    assert rest == {changelog: records[changelog]}
    # A partition out of the fetch set (paused, revoked) gives nothing, as Faust's own loop skips it.
    waiting = mon.intake.waiting()
    assert [(m.topic, m.partition, m.offset, m.value) for m in waiting] == [
        (events.topic, 0, 3, b"vvv"),
        (events.topic, 0, 4, b"vvvv"),
        (events.topic, 0, 5, b"vvvvv"),
        (labels.topic, 1, 7, b"v" * 7),
    ]
    assert all(m.generation_id == mon.app.consumer_generation_id for m in waiting)
    # The fourth record makes two takes of two: the partition that passed it stops being fetched.
    assert consumer._buffered_partitions == {TP(labels.topic, 1)}
    assert mon.intake._bytes == 3 + 4 + 5 + 7


def test_a_partition_held_back_for_a_full_intake_is_not_taken_for_stalled_until_the_intake_drains(tmp_path):
    async def build():
        mon = MonitorApp(Settings(data_dir=str(tmp_path), ingest_batch_records=2))
        return mon, mon.app.consumer

    mon, consumer = asyncio.run(build())
    events, other = TP(mon.settings.topics.events, 0), TP("not-an-input", 0)
    consumer._set_active_tps({events, other})
    full = False
    offset = 0
    while not full:  # as the fetch fills the intake until it says stop
        full = mon.intake.put(ConsumerMessage(events.topic, 0, offset, 0.0, 0, [], b"m", b"{}", None), 2)
        offset += 1
    # The rest of that fetch goes in all the same.
    mon.intake.put(ConsumerMessage(events.topic, 0, offset, 0.0, 0, [], b"m", b"{}", None), 2)
    consumer.on_buffer_full(events)
    consumer.on_buffer_full(other)
    assert consumer.held_back() == {events}
    asyncio.run(mon.intake.take())
    assert consumer.held_back() == {events}  # one take of several: the ingest is still behind
    mon.intake.clear()
    assert consumer.held_back() == set()  # drained, yet still out of the fetch: that is a stall


def test_the_ingest_takes_at_most_ingest_batch_mb_of_records_at_a_time(tmp_path):
    async def build_and_fill():
        mon = MonitorApp(Settings(data_dir=str(tmp_path), ingest_batch_mb=0.001))  # 1,049 bytes
        stops = [
            mon.intake.put(ConsumerMessage("t", 0, offset, 0.0, 0, [], b"m", b"{}", None), 400) for offset in range(12)
        ]
        return stops, [len(await mon.intake.take()) for _ in range(3)]

    stops, takes = asyncio.run(build_and_fill())
    assert takes == [2, 2, 2]
    # Four takes' worth of bytes held: the fetch of the partition stops.
    assert stops.index(True) == 10


@pytest.mark.parametrize("join_store", ["rocksdb", "memory"])
def test_the_label_join_read_back_from_its_changelog_holds_each_batch_entry_by_entry(tmp_path, join_store):
    # Recovery and standby copies go through Faust's own restore into the store; each
    # batch record must land as its entries, less those past the TTL.
    mon = MonitorApp(Settings(data_dir=str(tmp_path), join_store=join_store, label_ttl_s=60))
    table = mon.label_join
    now = time.time()
    key, value = join_batch(
        "m", 3, {"fresh": b'["P",1,"1",5.0,%r]' % now, "stale": b'["P",0,"1",5.0,%r]' % (now - 600)}
    )
    topic = table.changelog_topic.get_topic_name()

    def event(offset, key, value):
        message = ConsumerMessage(topic, 2, offset, 0.0, 0, [], key, value, None)
        return Event(mon.app, key, value, {}, message)

    table.apply_changelog_batch(
        [
            event(0, key, value),
            # An entry written on its own by an earlier worker, within the TTL and past it.
            event(1, join_key("n", "kept"), b'["L",1,5.0,%r]' % now),
            event(2, join_key("n", "old"), b'["L",1,5.0,%r]' % (now - 600)),
        ]
    )
    assert dict(store_scan(table)) == {
        join_key("m", "fresh"): b'["P",1,"1",5.0,%r]' % now,
        join_key("n", "kept"): b'["L",1,5.0,%r]' % now,
        key: repr(now).encode(),
    }
    # The batch deleted from the changelog: its time goes, the entries stay until they expire.
    table.apply_changelog_batch([event(3, key, None)])
    assert sorted(dict(store_scan(table))) == [join_key("m", "fresh"), join_key("n", "kept")]
    if join_store == "rocksdb":
        tp = TP(topic, 2)
        assert table.data.persisted_offset(tp) == 3

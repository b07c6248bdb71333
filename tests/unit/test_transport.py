"""The worker's Kafka consumer: the short fetch wait (Faust's own is 1.5 s), no read offsets for inputs."""

import asyncio

from faust.types import TP
from faust.types.tuples import ConsumerMessage

from stream.config import Settings
from stream.worker.app import MonitorApp
from stream.worker.faust_compat import FETCH_MAX_WAIT_MS
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


def test_an_input_record_the_agent_never_took_in_is_not_counted_for_the_commit(tmp_path):
    # Faust acknowledges records it skipped itself around a rebalance; their offsets must
    # not be committed: the worker reads them again from the hole they leave.
    async def build():
        mon = MonitorApp(Settings(data_dir=str(tmp_path)))
        return mon, mon.app.consumer

    mon, consumer = asyncio.run(build())
    topic = mon.settings.topics.events
    # As Faust's conductor does once the agents subscribe.
    mon.app.topics._acking_topics.add(topic)
    skipped, taken = (ConsumerMessage(topic, 0, offset, 0.0, 0, [], b"m", b"{}", None) for offset in (7, 8))
    consumer.taken.add(taken)
    assert consumer.ack(skipped) is False
    assert skipped.acked
    consumer.ack(taken)
    assert taken.acked
    assert consumer._acked[TP(topic, 0)] == [8]

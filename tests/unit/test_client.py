"""The SDK never blocks or raises into the caller's request path."""

import asyncio
import time

import pytest

from stream.broker import free_port
from stream.client import EventBuffer, MonitorClient, SyncMonitorClient, make_event
from stream.schemas import validate


def test_make_event_is_schema_valid():
    ev = make_event("m", "1", 3.5, [0.1, 0.9], confidence=0.9, features={"x": 1.0}, error=None)
    validate("inference-event", ev)
    assert "error" not in ev


def test_buffer_is_bounded_and_groups_by_model():
    buf = EventBuffer(max_events=3)
    assert [buf.add({"model": m}) for m in "aabb"] == [True, True, True, False]
    batches = dict(buf.take(batch_size=1))
    assert {k: len(v) for k, v in batches.items()} == {"a": 1, "b": 1}
    assert len(buf) == 1


def test_put_back_restores_order_and_reports_what_did_not_fit():
    buf = EventBuffer(max_events=3)
    buf.add({"model": "a", "i": 2})
    lost = buf.put_back("a", [{"model": "a", "i": 0}, {"model": "a", "i": 1}, {"model": "a", "i": 9}])
    assert lost == 1
    [(_model, events)] = buf.take(batch_size=10)
    assert [e["i"] for e in events] == [0, 1, 2]


async def test_record_is_fast_and_counts_drops_while_kafka_is_down():
    # Nothing listens on this port: Kafka is "down" for the whole test.
    client = MonitorClient(f"kafka://127.0.0.1:{free_port()}", max_buffer=1000)
    await client.start()
    t0 = time.perf_counter()
    accepted = [client.record("m", "1", 1.0, 0) for _ in range(5000)]
    elapsed = time.perf_counter() - t0
    assert accepted.count(True) == 1000
    assert client.stats.dropped == 4000
    assert elapsed < 2.0, "record() must not wait for Kafka"
    assert await client.flush(timeout_s=0.3) is False
    await client.close(timeout_s=0.5)
    assert client.stats.sent == 0
    assert client.stats.dropped == 5000
    assert client.stats.buffered == 0


def test_sync_client_survives_a_missing_broker():
    client = SyncMonitorClient(f"kafka://127.0.0.1:{free_port()}", max_buffer=10)
    for _ in range(20):
        client.record("m", "1", 1.0, 0)
    client.close(timeout_s=0.5)
    assert client.stats.recorded == 20
    assert client.stats.dropped == 20


def test_bad_broker_url_is_refused_up_front():
    with pytest.raises(ValueError, match="broker"):
        MonitorClient("localhost")


def test_event_loop_is_not_left_running():
    # The async client must not leave tasks behind after close().
    async def main():
        client = MonitorClient(f"kafka://127.0.0.1:{free_port()}")
        await client.start()
        await client.close(timeout_s=0.2)
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(main()) == []

"""The SDK never blocks or raises into the caller's request path."""

import asyncio
import time

import orjson
import pytest

from stream.contracts.codec import decode_record
from stream.contracts.schemas import validate
from stream.kafka.embedded_broker import free_port
from stream.sdk.client import Batch, EventBuffer, MonitorClient, SyncMonitorClient, make_event


def test_make_event_is_schema_valid():
    ev = make_event("m", "1", 3.5, [0.1, 0.9], confidence=0.9, features={"x": 1.0}, error=None)
    validate("inference-event", ev)
    assert "error" not in ev


def test_buffer_is_bounded_and_groups_by_model():
    buf = EventBuffer(max_events=3)
    assert [buf.add({"model": m}) for m in "aabb"] == [True, True, True, False]
    batches = {b.model: b.events for b in buf.take(batch_size=1)}
    assert {k: len(v) for k, v in batches.items()} == {"a": 1, "b": 1}
    assert len(buf) == 1


def test_a_failed_batch_is_sent_again_whole_under_its_id_before_newer_events():
    buf = EventBuffer(max_events=4)
    for i in range(3):
        buf.add({"model": "a", "i": i})
    buf.add({"model": "b", "i": 0})
    first = {b.model: b for b in buf.take(batch_size=2)}
    buf.add({"model": "a", "i": 3})
    assert buf.retry(first["a"]) == 0
    again = buf.take(batch_size=10)
    # The retried batch alone for model a: its id unchanged, newer events wait.
    assert [(b.model, b.batch_id, [e["i"] for e in b.events]) for b in again] == [("a", first["a"].batch_id, [0, 1])]
    [rest] = buf.take(batch_size=10)
    assert [e["i"] for e in rest.events] == [2, 3] and rest.batch_id != first["a"].batch_id
    assert len(buf) == 0


def test_a_failed_batch_that_does_not_fit_any_more_reports_the_loss():
    buf = EventBuffer(max_events=3)
    buf.add({"model": "a", "i": 0})
    buf.add({"model": "a", "i": 1})
    [batch] = buf.take(batch_size=2)
    buf.add({"model": "a", "i": 2})
    buf.add({"model": "a", "i": 3})
    assert buf.retry(batch) == 1
    [again] = buf.take(batch_size=10)
    assert [e["i"] for e in again.events] == [0] and again.batch_id == batch.batch_id


def test_envelopes_carry_their_batch_id_and_are_schema_valid():
    batch = Batch("m", [make_event("m", "1", 3.0, 1)])
    envelope = orjson.loads(batch.envelope())
    validate("inference-envelope", envelope)
    decoded = decode_record(b"m", batch.envelope())
    assert decoded.batch_id == batch.batch_id == envelope["batch_id"] and len(decoded.events) == 1


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

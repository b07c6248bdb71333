"""The SDK against a real broker: envelopes keyed by model, nothing lost."""

import asyncio
import time

import orjson

from stream.contracts.schemas import validate
from stream.kafka.follow import read_all
from stream.kafka.topics import ensure_topics, required_topics
from stream.sdk.client import SyncMonitorClient

from .conftest import isolated_settings


def test_sync_client_sends_envelopes_keyed_by_model(broker):
    iso = isolated_settings(broker)
    asyncio.run(ensure_topics(broker.bootstrap_servers, required_topics(iso.settings)[:1]))
    client = SyncMonitorClient(broker.url, topic=iso.settings.topics.events, batch_size=200)
    t0 = time.perf_counter()
    for i in range(1500):
        model = "a" if i % 3 else "b"
        assert client.record(model, "1", float(i % 50), i % 2, features={"x": i})
    record_time = time.perf_counter() - t0
    assert client.flush(10.0)
    client.close()
    assert client.stats.sent == 1500 and client.stats.dropped == 0
    assert record_time < 1.5, f"record() took {record_time:.2f}s for 1500 events"

    records = asyncio.run(read_all(broker.bootstrap_servers, iso.settings.topics.events, timeout_s=5))
    seen = {"a": 0, "b": 0}
    ids = set()
    for record in records:
        envelope = orjson.loads(record.value)
        validate("inference-envelope", envelope)
        assert len(envelope["events"]) <= 200
        for event in envelope["events"]:
            validate("inference-event", event)
            assert event["model"] == record.key.decode()
            seen[event["model"]] += 1
            ids.add(event["event_id"])
    assert seen == {"a": 1000, "b": 500}
    assert len(ids) == 1500
    assert len(records) < 1500 / 10, "events must travel in envelopes, not one per record"

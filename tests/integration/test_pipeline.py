"""End to end on a real broker: events in, schema-valid alerts and dead letters out.

One worker serves every test in this module (in test order), the way a
deployed worker sees mixed traffic: normal models, an incident, bad records.
"""

from __future__ import annotations

import asyncio
import base64
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream.contracts.schemas import validate
from stream.kafka.follow import read_all
from stream.sdk.client import make_event

from .conftest import isolated_settings
from .helpers import publish, wait_for_events


@pytest.fixture(scope="module")
def pipeline(broker):
    iso = isolated_settings(broker, zscore_warmup=100)
    worker = iso.worker()
    worker.start()
    yield iso, worker
    code = worker.stop()
    assert code == 0, worker.log_tail()


def normal_events(model, n, t0, version="1"):
    return [
        make_event(model, version, 20.0 + (i % 7), 0, timestamp=t0 + i * 0.01, event_id=f"{model}-{i}")
        for i in range(n)
    ]


async def publish_raw(iso, key, value):
    producer = AIOKafkaProducer(bootstrap_servers=iso.settings.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(iso.settings.topics.events, key=key, value=value)
    finally:
        await producer.stop()


async def read_topic(iso, which, expect=None, timeout_s=20.0):
    topic = getattr(iso.settings.topics, which)
    return await read_all(iso.settings.bootstrap_servers, topic, expect=expect, timeout_s=timeout_s)


def test_health_reports_ready_with_partitions(pipeline):
    iso, worker = pipeline
    health = worker.health()
    assert health["ready"] is True
    assert len(health["assigned"]) == iso.settings.partitions
    assert health["app_id"] == iso.settings.app_id


async def test_latency_incident_raises_one_schema_valid_alert(pipeline):
    iso, worker = pipeline
    t0 = time.time() - 30
    incident = [
        make_event("fraud-scorer", "2.3.0", 900.0 + i, 0, timestamp=t0 + 10 + i * 0.01, event_id=f"spike-{i}")
        for i in range(30)
    ]
    events = normal_events("fraud-scorer", 1000, t0, "2.3.0") + incident
    quiet = normal_events("recommender", 1000, t0)
    await publish(iso, events + quiet)

    records = await read_all(iso.settings.bootstrap_servers, iso.settings.topics.alerts, expect=1, timeout_s=30)
    wait_for_events(worker, 2030)
    records += await read_topic(iso, "alerts", timeout_s=2)
    alerts = list({a["alert_id"]: a for a in (orjson.loads(r.value) for r in records)}.values())
    for a in alerts:
        validate("alert", a)
    # One incident: the detectors that agree about the slowdown (zscore for the spike, level_shift
    # and cusum for the jump) share one incident key, which routes group on.
    assert {(a["model"], a["signal"]) for a in alerts} == {("fraud-scorer", "latency_ms")}
    assert len({a["incident"] for a in alerts}) == 1
    [record] = [r for r in records if orjson.loads(r.value)["detector"] == "zscore"][:1]
    alert = orjson.loads(record.value)
    assert set(alert["evidence"]["incident"]["detectors"]) >= {"zscore"}
    assert (alert["model"], alert["model_version"], alert["signal"]) == (
        "fraud-scorer",
        "2.3.0",
        "latency_ms",
    )
    assert alert["kind"] == "anomaly" and alert["status"] == "firing"
    assert record.key == alert["fingerprint"].encode()
    assert alert["evidence"]["outliers"] >= 5
    assert incident[0]["timestamp"] <= alert["event_time"] <= incident[-1]["timestamp"]
    assert alert["baseline"]["normal_high"] < 900.0
    # The quiet model kept on going without an alert (checked above: every alert is fraud-scorer's).


async def test_malformed_record_is_dead_lettered_and_the_worker_keeps_going(pipeline):
    iso, worker = pipeline
    before = wait_for_events(worker, 2030)
    await publish_raw(iso, b"fraud-scorer", b"{definitely not json")
    letters = await read_all(iso.settings.bootstrap_servers, iso.settings.topics.deadletter, expect=1, timeout_s=20)
    assert len(letters) == 1
    letter = orjson.loads(letters[0].value)
    validate("dead-letter", letter)
    assert letter["error_type"] == "invalid_json"
    assert letter["reason"].startswith("not valid JSON")
    assert base64.b64decode(letter["value_b64"]) == b"{definitely not json"
    assert letter["source"]["topic"] == iso.settings.topics.events

    await publish(iso, normal_events("fraud-scorer", 50, time.time(), "2.3.0"))
    after = wait_for_events(worker, before["events"] + 50)
    assert worker.running
    assert after["dead_letters"] == before["dead_letters"] + 1


async def test_envelope_with_one_bad_event_loses_only_that_event(pipeline):
    iso, worker = pipeline
    before = worker.health()
    good = normal_events("recommender", 3, time.time())
    bad = dict(good[1], latency_ms="slow", event_id="bad-one")
    envelope = {"schema_version": 1, "events": [good[0], bad, good[2]]}
    await publish_raw(iso, b"recommender", orjson.dumps(envelope))
    await publish_raw(iso, b"not-the-model", orjson.dumps(good[0]))
    letters = await read_all(iso.settings.bootstrap_servers, iso.settings.topics.deadletter, expect=3, timeout_s=20)
    by_type = {orjson.loads(r.value)["error_type"]: orjson.loads(r.value) for r in letters}
    schema_letter = by_type["invalid_schema"]
    assert schema_letter["source"]["event_index"] == 1
    assert "latency_ms" in schema_letter["reason"]
    assert orjson.loads(base64.b64decode(schema_letter["value_b64"]))["event_id"] == "bad-one"
    assert "not-the-model" in by_type["key_mismatch"]["reason"]
    after = wait_for_events(worker, before["events"] + 2)
    assert after["events"] == before["events"] + 2
    assert after["dead_letters"] == before["dead_letters"] + 2


async def test_records_produced_before_the_worker_starts_are_processed(broker):
    iso = isolated_settings(broker, zscore_warmup=100)
    from stream.kafka.topics import ensure_topics, required_topics

    await ensure_topics(broker.bootstrap_servers, required_topics(iso.settings))
    await publish(iso, normal_events("early-model", 300, time.time()))
    worker = iso.worker()
    await asyncio.get_running_loop().run_in_executor(None, worker.start)
    try:
        health = await asyncio.get_running_loop().run_in_executor(None, wait_for_events, worker, 300)
        assert health["events"] == 300 and health["models"] == 1
    finally:
        worker.stop()


def test_metrics_endpoint_counts_events_dead_letters_and_alerts(pipeline):
    import urllib.request

    _iso, worker = pipeline
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    assert 'stream_monitor_events_processed_total{model="fraud-scorer"} 1080.0' in text
    assert 'stream_monitor_dead_letters_total{error_type="invalid_json"} 1.0' in text
    assert 'stream_monitor_alerts_total{kind="anomaly",model="fraud-scorer",severity="critical"} 1.0' in text

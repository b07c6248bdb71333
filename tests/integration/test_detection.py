"""Detection end to end: drift names the feature, labels reveal an accuracy drop,
and an incident that ends is resolved."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream.contracts.alert_messages import fingerprint
from stream.contracts.schemas import validate
from stream.kafka.follow import read_all
from stream.sdk.client import make_event

from .conftest import isolated_settings
from .helpers import publish


@pytest.fixture(scope="module")
def detection(broker):
    iso = isolated_settings(broker, zscore_warmup=100, window_s=10.0)
    env = {
        "STREAM_MONITOR_WINDOW_S": "10",
        "STREAM_MONITOR_JOIN_PREDICTIONS": "always",
        "STREAM_MONITOR_PERFORMANCE_WINDOW": "100",
        "STREAM_MONITOR_RETRAIN_AFTER_S": "20",
    }
    worker = iso.worker(env_extra=env)
    worker.start()
    yield iso, worker
    worker.stop()


async def alerts_of(iso, model, expect, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    found: list[dict] = []
    while time.monotonic() < deadline:
        records = await read_all(iso.settings.bootstrap_servers, iso.settings.topics.alerts, timeout_s=2)
        found = [a for a in (orjson.loads(r.value) for r in records) if a["model"] == model]
        if expect(found):
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"alerts of {model} never matched: {[(a['detector'], a['status']) for a in found]}")


def events(model, n, t0, rng, shift=0.0, rate=100.0, latency=20.0, request_prefix=None, prediction=None):
    x = rng.normal(0, 1, (n, 3))
    out = []
    for i in range(n):
        features = {"a": float(x[i, 0]), "b": float(x[i, 1] + shift), "c": float(x[i, 2])}
        extra = {"request_id": f"{request_prefix}-{i}"} if request_prefix else {}
        pred = prediction(i) if prediction else 0
        out.append(
            make_event(
                model,
                "1",
                latency * float(np.exp(rng.normal(0, 0.1))),
                pred,
                timestamp=t0 + i / rate,
                features=features,
                **extra,
            )
        )
    return out


async def test_feature_shift_raises_a_drift_alert_that_names_the_feature_first(detection):
    iso, _ = detection
    rng = np.random.default_rng(1)
    t0 = time.time() - 90
    # 40 s of shifted traffic: drift in four 10-s windows, sustained past the 20-s retraining limit.
    shifted = events("shifty", 1200, t0 + 20, rng, shift=1.5, rate=30.0)
    await publish(iso, events("shifty", 1000, t0, rng) + shifted)
    alerts = await alerts_of(iso, "shifty", lambda a: any(x["detector"] == "reference_drift" for x in a))
    drift = next(a for a in alerts if a["detector"] == "reference_drift")
    validate("alert", drift)
    assert drift["kind"] == "drift" and drift["signal"] == "features.b"
    ranking = drift["evidence"]["ranking"]
    assert ranking[0]["feature"] == "features.b" and ranking[0]["drifted"]
    assert not any(r["drifted"] for r in ranking[1:] if r["feature"] in ("features.a", "features.c"))
    assert "features.b" in drift["message"]
    requests = await read_all(iso.settings.bootstrap_servers, iso.settings.topics.retrain, expect=1, timeout_s=20)
    [request] = [orjson.loads(r.value) for r in requests]
    validate("retrain-request", request)
    assert (request["model"], request["signal"], request["reason"]) == ("shifty", "features.b", "drift")
    assert request["alert_id"] == drift["alert_id"]


async def test_accuracy_drop_in_labels_raises_a_performance_alert(detection):
    iso, worker = detection
    rng = np.random.default_rng(2)
    t0 = time.time() - 30
    await publish(iso, events("clf", 400, t0, rng, request_prefix="req", prediction=lambda i: i % 2))
    producer = AIOKafkaProducer(bootstrap_servers=iso.settings.bootstrap_servers)
    await producer.start()
    try:
        for i in range(400):
            truth = i % 2 if i < 200 else 1 - i % 2  # right for 200 labels, then wrong
            label = {
                "schema_version": 1,
                "request_id": f"req-{i}",
                "model": "clf",
                "label": truth,
                "timestamp": time.time(),  # labels arrive after their predictions
            }
            await producer.send(iso.settings.topics.labels, key=b"clf", value=orjson.dumps(label))
        # One label twice, one label for nothing, one malformed label.
        dup = {"schema_version": 1, "request_id": "req-0", "model": "clf", "label": 0, "timestamp": time.time()}
        await producer.send(iso.settings.topics.labels, key=b"clf", value=orjson.dumps(dup))
        await producer.send_and_wait(iso.settings.topics.labels, key=b"clf", value=b'{"schema_version": 1}')
    finally:
        await producer.stop()
    alerts = await alerts_of(iso, "clf", lambda a: any(x["detector"] == "metric_drop" for x in a))
    perf = [a for a in alerts if a["kind"] == "performance"]
    for alert in perf:
        validate("alert", alert)
    # DDM sees the error stream change first; the rolling accuracy then falls below the reference.
    assert {a["detector"] for a in perf} == {"ddm", "metric_drop"}
    drop = next(a for a in perf if a["detector"] == "metric_drop")
    assert drop["signal"] == "performance.accuracy"
    assert drop["value"] < drop["threshold"] < drop["baseline"]["accuracy"]
    assert drop["evidence"]["metrics"]["accuracy"] < 0.5
    stats = None
    for _ in range(40):
        stats = await asyncio.get_running_loop().run_in_executor(None, _stats, worker, "clf")
        if stats["labels"].get("duplicate_label"):
            break
        await asyncio.sleep(0.25)
    # Labels may overtake their predictions (two topics): those join when the prediction comes.
    labels = stats["labels"]
    assert labels.get("joined", 0) + labels.get("joined_label_first", 0) == 400
    assert labels["duplicate_label"] == 1
    letters = await read_all(iso.settings.bootstrap_servers, iso.settings.topics.deadletter, timeout_s=3)
    from_labels = [orjson.loads(r.value) for r in letters]
    from_labels = [x for x in from_labels if x["source"]["topic"] == iso.settings.topics.labels]
    assert [x["error_type"] for x in from_labels] == ["invalid_schema"]
    validate("dead-letter", from_labels[0])
    assert stats["versions"]["1"]["performance"]["labelled"] == 400


def _stats(worker, model):
    import json
    import urllib.request

    with urllib.request.urlopen(f"{worker.url}/models/{model}/stats", timeout=5) as response:
        return json.loads(response.read())


async def test_an_incident_that_ends_is_resolved(detection):
    iso, _ = detection
    rng = np.random.default_rng(3)
    t0 = time.time() - 120
    normal = events("healing", 1000, t0, rng)
    spike = events("healing", 100, t0 + 12, rng, latency=400.0)
    after = events("healing", 3000, t0 + 15, rng)  # 30 s more of normal traffic: three windows
    await publish(iso, normal + spike + after)
    fp = fingerprint("healing", "1", "latency_ms", "zscore")
    alerts = await alerts_of(iso, "healing", lambda a: any(x["status"] == "resolved" for x in a))
    latency = [a for a in alerts if a["fingerprint"] == fp]
    assert [a["status"] for a in latency] == ["firing", "resolved"]
    firing, resolved = latency
    validate("alert", resolved)
    assert resolved["evidence"]["firing_alert_id"] == firing["alert_id"]
    assert resolved["event_time"] - firing["event_time"] >= 20
    assert "resolved" in resolved["message"]

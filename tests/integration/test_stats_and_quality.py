"""Window statistics survive a worker restart; data-quality alerts arrive; queries route.

Restarting means rejoining the same consumer group, which takes Tansu about
30 s; the test allows for it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import orjson
import pytest

from stream.contracts.schemas import validate
from stream.kafka.follow import read_all
from stream.kafka.topics import LABEL_JOIN_TABLE
from stream.monitoring.label_join import expand_join_record, is_batch_key, join_key
from stream.sdk.client import make_event
from stream.stats.window_stats import window_start

from .conftest import isolated_settings
from .helpers import publish, wait_for_events


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def get_json_when_ready(url, timeout_s=30.0):
    """GET, retrying while a partition that just moved is still being recovered (404/503)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return get_json(url)
        except urllib.error.HTTPError as exc:
            if exc.code not in (404, 503) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def model_events(model, n, t0, seed, features=None):
    rng = np.random.default_rng(seed)
    latency = rng.lognormal(3, 0.3, n)
    amount = rng.normal(100, 15, n)
    out = []
    for i in range(n):
        f = {"amount": float(amount[i]), "country": ["DE", "FR", "US"][i % 3]}
        if features:
            f.update(features(i))
        out.append(
            make_event(
                model,
                "1",
                float(latency[i]),
                i % 2,
                timestamp=t0 + i * 0.01,
                event_id=f"{model}-{seed}-{i}",
                features=f,
            )
        )
    return out


def test_stats_cover_events_from_before_and_after_a_restart(broker):
    iso = isolated_settings(broker)
    t0 = time.time() - 40  # every event of both runs falls in the last 10 minutes
    first = {m: model_events(m, 1500, t0, seed) for m, seed in (("alpha", 1), ("beta", 2))}
    second = {m: model_events(m, 1000, t0 + 16, seed) for m, seed in (("alpha", 3), ("beta", 4))}
    worker = iso.worker()
    worker.start()
    try:
        asyncio.run(publish(iso, first["alpha"] + first["beta"]))
        wait_for_events(worker, 3000)
    finally:
        assert worker.stop() == 0
    worker = iso.worker()
    worker.start(ready_timeout_s=120)
    try:
        asyncio.run(publish(iso, second["alpha"] + second["beta"]))
        wait_for_events(worker, 2000)
        listing = get_json(f"{worker.url}/models")["models"]
        assert [m["model"] for m in listing] == ["alpha", "beta"]
        for model in ("alpha", "beta"):
            events = first[model] + second[model]
            latency = np.array([e["latency_ms"] for e in events])
            amount = np.array([e["features"]["amount"] for e in events])
            stats = get_json(f"{worker.url}/models/{model}/stats?window=hopping")
            v = stats["versions"]["1"]
            assert v["events"] == 2500
            w = v["window"]
            assert w["count"] == 2500
            assert w["latency_ms"]["mean"] == pytest.approx(latency.mean())
            assert w["latency_ms"]["p50"] == pytest.approx(np.quantile(latency, 0.5), rel=0.011)
            assert w["latency_ms"]["p99"] == pytest.approx(np.quantile(latency, 0.99), rel=0.02)
            assert w["features"]["amount"]["mean"] == pytest.approx(amount.mean())
            assert w["features"]["country"]["distinct"] == 3
            assert v["reference"]["source"] == "first_events"
        # The terminal view of the same numbers.
        out = subprocess.run(
            [sys.executable, "-m", "stream.tools.cli", "stats", "alpha", "--url", worker.url, "--window", "hopping"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert "alpha 1: hopping window" in out.stdout and "2,500" in out.stdout and "amount" in out.stdout
        missing = subprocess.run(
            [sys.executable, "-m", "stream.tools.cli", "stats", "nobody", "--url", worker.url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert missing.returncode == 2
        assert "HTTP 404" in missing.stderr and "'nobody'" in missing.stderr
        with pytest.raises(urllib.error.HTTPError) as bad:
            get_json(f"{worker.url}/models/alpha/stats?window=weekly")
        assert bad.value.code == 400
    finally:
        worker.stop()


def test_missing_rate_jump_and_unseen_category_raise_data_quality_alerts(broker):
    iso = isolated_settings(broker)
    # All 15 s of events in one tumbling window: a window that closes between two of its
    # checkpoints leaves its last events to the next window's tests, and here no more come.
    t0 = window_start(time.time() - 60, iso.settings.detection.window_s) + 1
    normal = model_events("gamma", 1000, t0, 5)  # the first 1000 events become the reference
    broken = model_events(
        "gamma",
        400,
        t0 + 11,
        6,
        features=lambda i: {"amount": None if i % 2 else 100.0, "country": "BR" if i % 4 == 0 else "DE"},
    )
    with iso.worker() as worker:
        asyncio.run(publish(iso, normal + broken))
        wait_for_events(worker, 1400)
        alerts: dict = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(alerts) < 2:
            records = asyncio.run(read_all(iso.settings.bootstrap_servers, iso.settings.topics.alerts, timeout_s=2))
            found = [orjson.loads(r.value) for r in records]
            # The same change is also a drift of the reference (a separate alert); here: data quality.
            alerts = {a["detector"]: a for a in found if a["kind"] == "data_quality"}
    assert set(alerts) == {"missing_rate", "unseen_category"}
    for alert in alerts.values():
        validate("alert", alert)
        assert alert["kind"] == "data_quality" and alert["model"] == "gamma"
    missing = alerts["missing_rate"]
    assert missing["signal"] == "features.amount"
    # It fires as soon as the window's rate (normal events included) crosses the threshold.
    assert missing["evidence"]["observed_rate"] == pytest.approx(missing["value"], abs=1e-6)
    assert missing["value"] >= missing["threshold"] >= 0.05
    assert missing["evidence"]["baseline_rate"] == 0.0
    assert missing["baseline"]["missing_rate"] == 0.0
    unseen = alerts["unseen_category"]
    assert unseen["signal"] == "features.country"
    assert unseen["evidence"]["unseen"][0]["value"] == "BR"


def test_queries_are_answered_by_any_worker_of_the_group(tansu):
    iso = isolated_settings(tansu, partitions=4)
    models = [f"route-{i}" for i in range(8)]
    with iso.worker() as first:
        asyncio.run(publish(iso, [e for m in models for e in model_events(m, 100, time.time() - 10, 7)]))
        wait_for_events(first, 800)
        with iso.worker() as second:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                a, b = first.health(), second.health()
                if a["ready"] and b["ready"] and a["assigned"] and b["assigned"]:
                    break
                time.sleep(0.5)
            assert a["assigned"] and b["assigned"], "the second worker never got partitions"
            assert not set(a["assigned"]) & set(b["assigned"])
            for worker in (first, second):
                # Each model's stats come from its owner, whichever worker is asked.
                for model in models:
                    stats = get_json_when_ready(f"{worker.url}/models/{model}/stats")
                    assert stats["versions"]["1"]["events"] == 100, (worker.url, model)
            # Both workers list every model once (recovery of moved partitions may lag a moment).
            for worker in (first, second):
                listed: list[str] = []
                for _ in range(40):
                    listed = [m["model"] for m in get_json(f"{worker.url}/models")["models"]]
                    if listed == sorted(models):
                        break
                    time.sleep(0.5)
                assert listed == sorted(models)


def test_predictions_never_labelled_expire_after_their_time_to_live(broker):
    iso = isolated_settings(broker)
    env = {"STREAM_MONITOR_LABEL_TTL_S": "2", "STREAM_MONITOR_JOIN_PREDICTIONS": "always"}
    t0 = time.time() - 10
    waiting = model_events("delta", 50, t0, 8)
    for i, event in enumerate(waiting):
        event["request_id"] = f"req-{i}"
    with iso.worker(env_extra=env) as worker:
        asyncio.run(publish(iso, waiting))
        wait_for_events(worker, 50)
        expired: dict = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and expired.get("prediction_never_labelled", 0) < 50:
            time.sleep(1.0)
            # Expiry is counted in the model's state with its next record.
            late = model_events("delta", 1, time.time(), 9)
            asyncio.run(publish(iso, late))
            with urllib.request.urlopen(f"{worker.url}/models/delta/stats", timeout=5) as response:
                expired = json.loads(response.read())["labels"]
        # The join's changelog: the predictions went in batches, one record per checkpoint, and
        # each batch is deleted (a tombstone) once its newest entry is past the TTL.
        changelog = f"{iso.settings.app_id}-{LABEL_JOIN_TABLE}-changelog"
        deadline = time.monotonic() + 30
        while True:
            records = asyncio.run(read_all(iso.settings.bootstrap_servers, changelog, timeout_s=2))
            batches = {r.key: r.value for r in records if r.value is not None}
            deleted = {r.key for r in records if r.value is None}
            if deleted >= batches.keys() or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    # The 50 predictions that never got a label, and nothing else: the later records had no request_id.
    assert expired == {"prediction_never_labelled": 50}
    assert batches and all(is_batch_key(key) for key in batches)
    entries = [k for key, value in batches.items() for k, _ in expand_join_record(key, value) if not is_batch_key(k)]
    assert sorted(entries) == sorted(join_key("delta", f"req-{i}") for i in range(50))
    assert len(batches) < 50
    assert deleted >= batches.keys(), f"batches never deleted from the changelog: {sorted(batches.keys() - deleted)}"

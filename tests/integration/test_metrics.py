"""Prometheus scrape during a run: per-model series, detector scores, lag, and an alert counter that goes up."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.kafka.follow import read_all
from stream.sdk.client import make_event
from stream.tools.tensorboard import read_scalars

from .conftest import isolated_settings
from .helpers import publish, wait_for_events
from .test_faults import wait_for_counts


def scrape(worker) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture(scope="module")
def scraped(broker):
    iso = isolated_settings(broker, zscore_warmup=100)
    worker = iso.worker()
    worker.start()
    yield iso, worker
    worker.stop()


async def test_scrape_shows_model_series_and_the_alert_counter_going_up(scraped):
    iso, worker = scraped
    t0 = time.time() - 40
    quiet = [
        make_event("scored", "7", 20.0 + i % 5, i % 2, timestamp=t0 + i * 0.01, features={"amount": 100.0 + i % 13})
        for i in range(1500)
    ]
    await publish(iso, quiet)
    wait_for_events(worker, len(quiet))
    before = scrape(worker)
    version = {"model": "scored", "model_version": "7"}
    assert value(before, "stream_monitor_window_events", **version) > 0
    p50 = value(before, "stream_monitor_window_latency_seconds", quantile="0.5", **version)
    assert 0.019 <= p50 <= 0.025  # 20-24 ms, exported in seconds
    assert value(before, "stream_monitor_window_error_ratio", **version) == 0.0
    # cusum's statistic, in block standard deviations: present, and below its limit (12) on quiet traffic.
    shift = value(before, "stream_monitor_drift_shift_sd", signal="features.amount", detector="cusum", **version)
    assert shift is not None and 0 <= shift < 12
    assert value(before, "stream_monitor_anomaly_outlier_ratio", signal="latency_ms", detector="zscore", **version) == 0
    alerts = dict(kind="anomaly", model="scored", severity="critical")
    assert value(before, "stream_monitor_alerts_total", **alerts) is None
    assert value(before, "stream_monitor_processing_seconds_count") > 0
    lags = [v for (name, labels), v in before.items() if name == "stream_monitor_consumer_lag_records"]
    assert len(lags) == 2 * iso.settings.partitions and all(v >= 0 for v in lags)

    spike = [
        make_event("scored", "7", 900.0 + i, 0, timestamp=t0 + 15 + i * 0.01, features={"amount": 100.0})
        for i in range(20)
    ]
    await publish(iso, spike)
    await read_all(iso.settings.bootstrap_servers, iso.settings.topics.alerts, expect=1, timeout_s=30)
    wait_for_events(worker, len(quiet) + len(spike))
    after = scrape(worker)
    assert value(after, "stream_monitor_alerts_total", **alerts) == 1.0
    ratio = value(after, "stream_monitor_anomaly_outlier_ratio", signal="latency_ms", detector="zscore", **version)
    assert ratio > 0
    assert value(after, "stream_monitor_anomaly_max_score", signal="latency_ms", detector="zscore", **version) > 4
    assert value(after, "stream_monitor_metrics_models_dropped") == 0


async def test_tensorboard_export_writes_each_closed_window_once(scraped, tmp_path):
    iso, worker = scraped
    t0 = (time.time() // 60) * 60 - 300  # five whole minutes ago: four closed windows, then the open one
    events = [make_event("tb-model", "2", 30.0, 0, timestamp=t0 + i * 0.2) for i in range(1400)]
    await publish(iso, events)
    wait_for_counts(worker, {"tb-model": len(events)})
    logdir = tmp_path / "runs"
    command = [sys.executable, "-m", "stream.tools.cli", "tensorboard", "--url", worker.url, "--logdir", str(logdir)]
    command.append("--once")
    for _ in range(2):  # a second process, a second later (its own event file), finds nothing new
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        time.sleep(1.1)
    scalars = read_scalars(logdir)
    counts = scalars[("tb-model/2", "health/events")]
    assert [step for step, _ in counts] == [int(t0 + 60 * k) for k in range(4)]
    assert [value for _, value in counts] == [300.0] * 4
    p95 = scalars[("tb-model/2", "latency/p95_ms")]
    assert all(abs(value - 30.0) < 0.5 for _, value in p95)

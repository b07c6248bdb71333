"""The per-model Prometheus series, read from monitors at scrape time, and the cap on models."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.monitoring.model_monitor import ModelMonitor
from stream.sdk.client import make_event
from stream.settings import DetectionSettings
from stream.web.exporter import ModelSeriesCollector
from stream.web.metrics import ModelLabelCap

SETTINGS = DetectionSettings(zscore_warmup=50, reference_events=100, reference_min_s=0)


def monitor(model: str, latency: float = 20.0, errors_every: int = 0) -> ModelMonitor:
    mon = ModelMonitor(model, SETTINGS)
    events = [
        make_event(
            model,
            "1",
            latency + i % 3,
            0,
            timestamp=1_000.0 + i * 0.01,
            error="timeout" if errors_every and i % errors_every == 0 else None,
            features={"x": float(i % 10)},
        )
        for i in range(400)
    ]
    mon.process(events)
    return mon


def samples(collector: ModelSeriesCollector) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_window_series_per_model_version_in_base_units():
    found = samples(
        ModelSeriesCollector(lambda: [monitor("a", errors_every=4)], lambda: [("ev", 0, 7)], ModelLabelCap(10))
    )
    labels = (("model", "a"), ("model_version", "1"))
    assert found[("stream_monitor_window_events", labels)] == 400
    assert found[("stream_monitor_window_error_ratio", labels)] == 0.25
    assert 0.019 < found[("stream_monitor_window_latency_seconds", (*labels, ("quantile", "0.99")))] < 0.0225
    psi = [k for k in found if k[0] == "stream_monitor_drift_psi"]
    assert ("signal", "features.x") in [label for _, ls in psi for label in ls]
    assert found[("stream_monitor_consumer_lag_records", (("partition", "0"), ("topic", "ev")))] == 7


def test_models_beyond_the_cap_get_no_series_and_one_warning(caplog):
    models = [monitor(name) for name in ("c", "a", "b")]
    collector = ModelSeriesCollector(lambda: models, lambda: [], ModelLabelCap(max_models=2))
    with caplog.at_level(logging.WARNING, logger="stream.web.metrics"):
        first = samples(collector)
        samples(collector)
    exported = {dict(ls)["model"] for name, ls in first if name == "stream_monitor_window_events"}
    assert exported == {"a", "b"}
    assert first[("stream_monitor_metrics_models_dropped", ())] == 1
    assert len([r for r in caplog.records if "metrics_max_models=2" in r.getMessage()]) == 1


def test_counters_beyond_the_model_cap_go_to_other(caplog):
    from stream.web.metrics import WorkerMetrics

    metrics = WorkerMetrics(max_models=2)
    with caplog.at_level(logging.WARNING, logger="stream.web.metrics"):
        for model in ("a", "b", "c", "d", "a"):
            metrics.events.labels(model=metrics.model_label(model)).inc()
    text = metrics.render().decode()
    assert 'stream_monitor_events_processed_total{model="a"} 2.0' in text
    assert 'stream_monitor_events_processed_total{model="_other"} 2.0' in text
    assert 'model="c"' not in text
    assert len([r for r in caplog.records if "metrics_max_models=2" in r.getMessage()]) == 1


def test_alerts_firing_now_are_a_gauge_that_falls_when_they_resolve():
    mon = monitor("slow")
    spike = [make_event("slow", "1", 900.0, 0, timestamp=1_004.0 + i * 0.01) for i in range(20)]
    fired = [a for a in mon.process(spike) if a["status"] == "firing"]
    assert fired
    collector = ModelSeriesCollector(lambda: [mon], lambda: [], ModelLabelCap(10))
    firing = {k: v for k, v in samples(collector).items() if k[0] == "stream_monitor_alerts_firing"}
    expected = {}
    for alert in fired:
        key = (
            "stream_monitor_alerts_firing",
            (("kind", alert["kind"]), ("model", "slow"), ("model_version", "1"), ("severity", alert["severity"])),
        )
        expected[key] = expected.get(key, 0) + 1
    assert firing == expected
    # Two quiet windows later the alert resolves, and the gauge has nothing firing.
    quiet = [
        make_event("slow", "1", 20.0 + i % 3, 0, timestamp=1_010.0 + i, features={"x": float(i % 10)})
        for i in range(200)
    ]
    resolved = [a for a in mon.process(quiet) if a["status"] == "resolved"]
    assert {a["fingerprint"] for a in resolved} >= {a["fingerprint"] for a in fired}
    still = {dict(k[1])["kind"] for k in samples(collector) if k[0] == "stream_monitor_alerts_firing"}
    assert not still & {a["kind"] for a in fired}


def test_estimated_performance_is_a_series_beside_the_realised_one():
    mon = ModelMonitor("a", SETTINGS)
    mon.process(
        [
            {**make_event("a", "1", 5.0, i % 2, timestamp=1_000.0 + i * 0.01), "confidence": 0.75 + 0.2 * (i % 2)}
            for i in range(600)
        ]
    )
    found = samples(ModelSeriesCollector(lambda: [mon], lambda: [], ModelLabelCap(10)))
    labels = (("metric", "accuracy"), ("model", "a"), ("model_version", "1"))
    # No label yet: the model's own confidences, 0.75 and 0.95 alike often.
    assert abs(found[("stream_monitor_estimated_performance", labels)] - 0.85) < 0.01
    assert ("stream_monitor_performance", labels) not in found

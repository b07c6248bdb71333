"""Performance estimated from confidence (CBPE): close to what labels later show, early under covariate shift."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from stream.detectors.cbpe import ConfidenceBasedPerformance
from stream.monitoring.label_join import LabelJoiner, ModelLabels
from stream.monitoring.model_monitor import ModelMonitor
from stream.monitoring.monitor_file import MonitorConfig
from stream.settings import DetectionSettings


def requests(rng, n, x_mean, overconfidence=1.0, start=0.0):
    """A binary classifier on one input: predictions, confidences, labels and events (10 per second)."""
    x = rng.normal(x_mean, 1.0, n)
    truth = 1 / (1 + np.exp(-2.0 * x))
    labels = (rng.random(n) < truth).astype(int)
    predictions = (x > 0).astype(int)
    confidence = 1 / (1 + np.exp(-2.0 * overconfidence * np.abs(x)))
    events = [
        {"timestamp": start + i / 10, "prediction": int(p), "confidence": float(c)}
        for i, (p, c) in enumerate(zip(predictions, confidence, strict=True))
    ]
    return events, predictions, labels


def test_a_calibrated_model_s_estimate_matches_the_realised_accuracy_precision_and_recall():
    rng = np.random.default_rng(1)
    events, predictions, labels = requests(rng, 20_000, 0.8)
    rule = ConfidenceBasedPerformance(chunk=5_000, check_every=1_000, reference_chunks=2)
    rule.update(events)
    estimated = rule.summary()["estimated"]
    last = slice(-5_000, None)
    right = predictions[last] == labels[last]
    positive = predictions[last] == 1
    assert estimated["accuracy"] == pytest.approx(right.mean(), abs=0.015)
    assert estimated["precision"] == pytest.approx(labels[last][positive].mean(), abs=0.02)
    assert estimated["recall"] == pytest.approx(right[labels[last] == 1].mean(), abs=0.02)
    assert 0 < estimated["accuracy_band"] < 0.03


def test_labels_correct_an_overconfident_model():
    rng = np.random.default_rng(2)
    events, predictions, labels = requests(rng, 20_000, 0.5, overconfidence=2.0)
    rule = ConfidenceBasedPerformance(chunk=1_000, check_every=500, reference_chunks=2)
    rule.update(events[:10_000])
    realised = (predictions[9_000:10_000] == labels[9_000:10_000]).mean()
    # Taken at its word, the model claims far more than it achieves.
    assert rule.summary()["estimated"]["accuracy"] > realised + 0.05
    for i in range(10_000):
        rule.learn(int(labels[i]), int(predictions[i]), events[i]["confidence"])
    rule.update(events[10_000:])
    realised = (predictions[-1_000:] == labels[-1_000:]).mean()
    assert rule.summary()["estimated"]["accuracy"] == pytest.approx(realised, abs=0.03)
    # A bin's labels are halved once it holds 5,000, so the calibration follows change.
    assert 5_000 <= rule.summary()["calibration_labels"] < 10_000


def test_covariate_shift_fires_before_any_label_and_a_steady_stream_stays_quiet():
    rng = np.random.default_rng(3)
    steady, _, _ = requests(rng, 60_000, 1.0)
    rule = ConfidenceBasedPerformance()
    assert rule.update(steady) == []
    shifted, predictions, labels = requests(rng, 3_000, 0.0, start=6_000.0)
    found = rule.update(shifted)
    # Once per chunk of 500 while the drop lasts (the alert lifecycle folds the repeats).
    assert {(f.signal, f.detector, f.kind) for f in found} == {("performance.accuracy", "cbpe", "performance")}
    assert len(found) == 6 and found[0].event_time < 6_000.0 + 50.0  # within its first 500 shifted predictions
    alert = found[0]
    # The estimate is honest about the shifted stream: within the band of what labels will show.
    realised = (predictions[:500] == labels[:500]).mean()
    assert alert.value == pytest.approx(realised, abs=0.05)
    assert alert.value < alert.threshold < alert.baseline["accuracy"]
    assert alert.evidence["calibration_labels"] == 0 and alert.evidence["realised"] is None


def test_a_saved_estimate_decides_as_the_running_one():
    rng = np.random.default_rng(4)
    steady, _, _ = requests(rng, 8_000, 1.0)
    shifted, _, _ = requests(rng, 2_000, 0.0, start=800.0)
    running = ConfidenceBasedPerformance(chunk=500, reference_chunks=10)
    running.update(steady)
    restored = ConfidenceBasedPerformance(chunk=500, reference_chunks=10)
    restored.load_state(orjson.loads(orjson.dumps(running.to_dict())))
    a, b = running.update(shifted), restored.update(shifted)
    assert [f.event_time for f in a] == [f.event_time for f in b] != []
    assert a[0].value == b[0].value


@pytest.mark.parametrize("batch", [7, 333, 5_000])
def test_estimates_and_findings_do_not_depend_on_how_predictions_are_batched(batch):
    rng = np.random.default_rng(5)
    steady, _, _ = requests(rng, 6_000, 1.0)
    shifted, _, _ = requests(rng, 2_000, 0.0, start=600.0)
    stream = steady + shifted

    def run(size):
        rule = ConfidenceBasedPerformance(chunk=500, reference_chunks=4)
        found = [f for i in range(0, len(stream), size) for f in rule.update(stream[i : i + size])]
        summary = rule.summary()
        summary["reference"] = round(summary["reference"], 12)  # a mean summed in another order
        return [(f.event_time, f.value) for f in found], summary

    one_by_one = run(1)
    assert one_by_one[0] and run(batch) == one_by_one


def test_many_classes_get_accuracy_only_and_scores_are_not_classes():
    rule = ConfidenceBasedPerformance(chunk=100, check_every=100, reference_chunks=1)
    rule.update([{"timestamp": float(i), "prediction": ["a", "b", "c"][i % 3], "confidence": 0.8} for i in range(300)])
    rule.update([{"timestamp": 300.0 + i, "prediction": 0.37, "confidence": 0.8} for i in range(300)])
    estimated = rule.summary()["estimated"]
    assert set(estimated) == {"accuracy", "accuracy_band"} and estimated["accuracy"] == pytest.approx(0.8, abs=0.03)
    assert rule.calibration.seen.sum() == 300


def test_joined_labels_calibrate_the_estimate_through_the_model_monitor():
    monitor = ModelMonitor("m", DetectionSettings(join_predictions="always"))
    labels = ModelLabels(LabelJoiner({}), mode="always")
    events = [
        {
            "model_version": "1",
            "timestamp": float(i),
            "latency_ms": 5.0,
            "prediction": 1,
            "confidence": 0.9,
            "request_id": f"r{i}",
        }
        for i in range(50)
    ]
    monitor.process(events)
    labels.on_events(monitor, events)
    labels.on_labels(monitor, [{"request_id": f"r{i}", "label": int(i % 2 == 0), "timestamp": 60.0} for i in range(50)])
    estimated = monitor.summary()["versions"]["1"]["estimated_performance"]
    assert estimated["calibration_labels"] == 50


def test_the_monitor_file_turns_estimation_off():
    config = MonitorConfig({"models": {"m": {"performance": {"estimate": False}}}})
    monitor = ModelMonitor("m", DetectionSettings(), config)
    monitor.process([{"model_version": "1", "timestamp": 1.0, "latency_ms": 5.0, "prediction": 1, "confidence": 0.9}])
    assert monitor.summary()["versions"]["1"]["estimated_performance"] is None


def test_a_dropped_model_state_is_freed_at_once_without_the_cycle_collector():
    # The worker drops and rebuilds states beyond its cache; a reference cycle would keep each until the
    # collector ran (an estimate holding its version monitor's method did).
    import gc

    event = {
        "model_version": "1",
        "timestamp": 1.0,
        "latency_ms": 1.0,
        "prediction": 1,
        "confidence": 0.9,
        "client_id": "a",
        "segment": "s",
    }
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            monitor = ModelMonitor("m", DetectionSettings())
            monitor.process([event])
            del monitor
        assert gc.collect() == 0
    finally:
        gc.enable()

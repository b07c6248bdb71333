"""Every built-in detector implements the protocol its monitor drives it through, and a version's
monitor holds each kind where it expects it."""

import numpy as np
import pytest

from stream.detectors.base import BatchDetector, LabelDetector, SignalDetector, WindowDetector
from stream.monitoring.model_monitor import ModelMonitor
from stream.monitoring.monitor_file import ANOMALY_RULES, CHANGE_RULES, build_rule
from stream.settings import DetectionSettings


@pytest.mark.parametrize("name", [*ANOMALY_RULES, *CHANGE_RULES, "adwin", "page_hinkley", "kswin"])
def test_every_per_signal_detector_of_the_monitor_file_is_a_signal_detector(name):
    rule = build_rule("latency_ms", name, {}, 60.0)
    assert isinstance(rule, SignalDetector)
    assert "state_version" in rule.to_dict()


def test_a_version_drives_its_detectors_through_the_protocols():
    monitor = ModelMonitor("m", DetectionSettings(reference_events=200, reference_min_s=0))
    rng = np.random.default_rng(3)
    events = [
        {
            "model_version": "1",
            "timestamp": 1000.0 + i * 0.05,
            "latency_ms": float(rng.gamma(4, 5)),
            "error": None,
            "features": {"a": float(rng.normal()), "b": float(rng.normal()), "c": "xyz"[i % 3]},
        }
        for i in range(600)
    ]
    vm = None
    for i in range(0, 600, 100):
        monitor.process(events[i : i + 100])
        vm = monitor.versions["1"]
    assert vm is not None
    assert all(isinstance(rule, BatchDetector) for rule in vm.batch_rules())
    window_rules = vm.window_rules()
    assert [r.name for r in window_rules] == ["data_quality", "reference_drift", "mahalanobis"]
    assert all(isinstance(rule, WindowDetector) for rule in window_rules)
    assert isinstance(vm.performance, LabelDetector)
    for rules in vm.signal_rules.values():
        assert all(isinstance(rule, SignalDetector) for rule in rules.values())

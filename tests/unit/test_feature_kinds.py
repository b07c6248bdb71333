"""A feature's kind is fixed once per model version: a type change at a window boundary is wrong_type."""

from stream.monitoring.model_monitor import ModelMonitor
from stream.settings import DetectionSettings


def _event(i: int, value) -> dict:
    return {
        "model_version": "1",
        "timestamp": 1000.0 + i * 0.1,
        "latency_ms": 10.0,
        "error": None,
        "features": {"amount": value, "country": "DE"},
    }


def test_numeric_feature_arriving_as_strings_from_a_window_boundary_is_wrong_type():
    monitor = ModelMonitor("m", DetectionSettings(reference_events=200, reference_min_s=0))
    alerts = []
    # 600 events = one minute: the reference is learnt, the first window closes with numbers only.
    for start in range(0, 600, 50):
        alerts += monitor.process([_event(i, 10.0 + i % 7) for i in range(start, start + 50)])
    assert not [a for a in alerts if a["detector"] == "wrong_type"]
    # From the next window on (a new pane), every amount is a string.
    for start in range(600, 1200, 50):
        alerts += monitor.process([_event(i, f"{10 + i % 7}") for i in range(start, start + 50)])
    wrong = [a for a in alerts if a["detector"] == "wrong_type"]
    assert [a["signal"] for a in wrong] == ["features.amount"]
    version = monitor.versions["1"]
    # Every pane agrees on the kind the reference fixed.
    assert {pane.features.features["amount"].kind for pane in version.windows.panes.values()} == {"numeric"}


def test_kinds_survive_a_restore():
    monitor = ModelMonitor("m", DetectionSettings(reference_events=100, reference_min_s=0))
    monitor.process([_event(i, 5.0) for i in range(150)])
    restored = ModelMonitor.from_dict(
        "m", DetectionSettings(reference_events=100, reference_min_s=0), monitor.to_dict()
    )
    assert restored.versions["1"].windows.feature_kinds == {"amount": "numeric", "country": "categorical"}
    alerts = restored.process([_event(i, "five") for i in range(700, 800)])
    assert [a["detector"] for a in alerts if a["detector"] == "wrong_type"] == ["wrong_type"]

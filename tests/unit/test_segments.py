"""Segments: bounded, blamed only when they drive a change, small ones never exported, state survives."""

from __future__ import annotations

import numpy as np

from stream.contracts.schemas import validate
from stream.monitoring.label_join import LabelJoiner, ModelLabels
from stream.monitoring.model_monitor import ModelMonitor
from stream.monitoring.monitor_file import MonitorConfig
from stream.monitoring.segments import OTHER_SEGMENTS, SegmentMonitor
from stream.settings import DetectionSettings
from stream.worker.state_codec import pack_state, unpack_state

SETTINGS = DetectionSettings(zscore_warmup=50)


def events(segments, start, n, latency=20.0, error_every=0, spacing=0.1):
    return [
        {
            "timestamp": start + i * spacing,
            "segment": segments[i % len(segments)],
            "latency_ms": latency + i % 5,
            "error": "timeout" if error_every and i % error_every == 0 else None,
        }
        for i in range(n)
    ]


def monitor(**settings):
    return SegmentMonitor("m", "1", DetectionSettings(zscore_warmup=50, **settings), MonitorConfig().for_model("m"))


def test_segments_beyond_the_cap_pool_as_other_until_one_outgrows_the_lightest():
    seg = monitor(max_segments=2)
    seg.process(events(["a", "b"], 0.0, 200) + events(["c"], 20.0, 10))
    assert sorted(seg.segments) == ["a", "b", OTHER_SEGMENTS]
    seg.process(events(["c"], 30.0, 600))  # c now has more than twice a's events
    assert "c" in seg.segments and len([s for s in seg.segments if s != OTHER_SEGMENTS]) == 2


def test_an_error_burst_in_one_segment_is_its_alert_and_the_model_wide_driver():
    seg = monitor()
    names = ["eu", "us", "asia", "latam", "africa"]
    rng = np.random.default_rng(1)
    for w in range(5):
        batch = events(names, w * 60.0, 600)
        for e in batch:
            e["error"] = "timeout" if rng.random() < 0.01 else None
        assert seg.process(batch) == []
    burst = events(names, 300.0, 500)
    for e in burst:
        e["error"] = "timeout" if e["segment"] == "asia" and rng.random() < 0.6 else None
    alerts = seg.process(burst)
    assert {(a["segment"], a["signal"]) for a in alerts} == {("asia", "error_rate")}
    for alert in alerts:
        validate("alert", alert)
        assert alert["message"].startswith("m 1 segment asia: ")
    drivers = seg.drivers("error_rate")
    assert [d["segment"] for d in drivers] == ["asia"] and drivers[0]["share"] > 0.9
    # Latency did not move: no one drives it.
    assert seg.drivers("latency_ms") == []


def test_a_slice_under_min_slice_events_is_suppressed_everywhere():
    seg = monitor(min_slice_events=20)
    seg.process(events(["big"], 0.0, 400) + events(["three"], 1.0, 3, spacing=5.0))
    summary = seg.summary()
    assert summary["three"] == {"suppressed": True, "reason": "fewer than 20 events in the window"}
    assert summary["big"]["window"]["count"] == 400
    # Even three extreme latencies make no alert, and no ranking names the slice.
    seg.process(events(["big"], 60.0, 400))
    spike = events(["three"], 61.0, 3, latency=5_000.0)
    assert seg.process(spike) == []
    assert all(d["segment"] != "three" for d in seg.drivers("latency_ms"))


def test_a_saved_segment_state_decides_as_the_running_one():
    running = monitor()
    running.process(events(["eu", "us"], 0.0, 1_200))
    restored = monitor()
    restored.load_state(unpack_state(pack_state(running.to_dict())))
    assert restored.summary() == running.summary()
    spike = events(["us"], 130.0, 30, latency=900.0)
    a, b = running.process(spike), restored.process(spike)
    assert [x["alert_id"] for x in a] == [x["alert_id"] for x in b] != []


def test_labels_count_a_segment_s_accuracy_through_the_join():
    mon = ModelMonitor("m", DetectionSettings(join_predictions="always", min_slice_events=20))
    labels = ModelLabels(LabelJoiner({}), mode="always")
    batch = [
        {
            "model_version": "1",
            "timestamp": 1.0 + i * 0.1,
            "latency_ms": 10.0,
            "prediction": 1,
            "confidence": 0.8,
            "segment": ("eu", "us")[i % 2],
            "request_id": f"r{i}",
        }
        for i in range(100)
    ]
    mon.process(batch)
    labels.on_events(mon, batch)
    # eu is always right, us right one time in five.
    labels.on_labels(
        mon,
        [
            {"request_id": f"r{i}", "label": 1 if i % 2 == 0 or i % 10 == 1 else 0, "timestamp": 20.0}
            for i in range(100)
        ],
    )
    segments = mon.segments()["versions"]["1"]
    assert segments["eu"]["accuracy"]["realised"] == 1.0 and segments["eu"]["accuracy"]["labelled"] == 50
    assert segments["us"]["accuracy"]["realised"] == 0.2
    # The estimate comes from the version's calibration: equally confident segments are estimated alike.
    assert segments["eu"]["accuracy"]["estimated"] == segments["us"]["accuracy"]["estimated"] < 0.8


def test_a_model_without_segments_costs_nothing_and_says_so():
    mon = ModelMonitor("m", SETTINGS)
    mon.process([{"model_version": "1", "timestamp": 1.0, "latency_ms": 5.0}])
    assert mon.segments()["versions"] == {"1": {}}
    assert mon.versions["1"].segments.to_dict()["segments"] == {}

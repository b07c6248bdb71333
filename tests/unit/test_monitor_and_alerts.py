"""Per-model state, alert messages and dead letters against their contracts."""

import base64
import dataclasses

import numpy as np
import orjson
import pytest

from stream.contracts.alert_messages import build_alert, fingerprint, format_alert
from stream.contracts.codec import Reject
from stream.contracts.dead_letters import dead_letter
from stream.contracts.schemas import validate
from stream.monitoring.model_monitor import ModelMonitor
from stream.settings import DetectionSettings
from stream.worker.state_codec import decode_state, encode_state, pack_state

SETTINGS = DetectionSettings(zscore_warmup=50, zscore_min_outliers=3, window_s=60)


def ev(i, latency, version="1", error=None):
    return {"model_version": version, "timestamp": 1_000.0 + i * 0.1, "latency_ms": latency, "error": error}


def warm(monitor, version="1", n=200):
    return monitor.process([ev(i, 10.0 + i % 4, version) for i in range(n)])


def test_alerts_are_schema_valid_and_name_model_version_and_signal():
    mon = ModelMonitor("fraud-scorer", SETTINGS)
    assert warm(mon) == []
    alerts = mon.process([ev(300 + i, 900.0) for i in range(5)])
    assert len(alerts) == 1
    alert = alerts[0]
    validate("alert", alert)
    assert (alert["model"], alert["model_version"], alert["signal"]) == ("fraud-scorer", "1", "latency_ms")
    assert alert["fingerprint"] == fingerprint("fraud-scorer", "1", "latency_ms", "zscore")
    assert alert["message"].startswith("fraud-scorer 1: ")
    # Every alert says where to look first.
    assert alert["message"].endswith(
        "Look at the service: a recent deploy, its dependencies' latency, its CPU and memory."
    )
    assert alert["event_time"] == pytest.approx(1_000.0 + 302 * 0.1)
    assert "fraud-scorer" in format_alert(alert)


def test_versions_keep_separate_baselines():
    mon = ModelMonitor("m", SETTINGS)
    warm(mon, "1")
    # Version 2 is slower by design; it must not be judged against version 1.
    assert mon.process([ev(i, 200.0 + i % 4, "2") for i in range(200)]) == []
    assert set(mon.versions) == {"1", "2"}
    assert mon.versions["2"].events == 200


def test_error_counts_land_in_the_window():
    mon = ModelMonitor("m", SETTINGS)
    mon.process([ev(0, 10.0, error="timeout"), ev(1, 11.0), ev(2, 12.0, error="oom")])
    window = mon.summary()["versions"]["1"]["window"]
    assert window["errors"] == 2 and window["count"] == 3
    assert window["errors_by_kind"] == {"timeout": 1, "oom": 1}


def test_state_round_trip_gives_the_same_alerts():
    a = ModelMonitor("m", SETTINGS)
    warm(a)
    b = ModelMonitor.from_dict("m", SETTINGS, a.to_dict())
    assert b.seq == a.seq
    burst = [ev(400 + i, 700.0) for i in range(4)]
    fa, fb = a.process(burst), b.process(burst)
    assert [x["evidence"] for x in fa] == [x["evidence"] for x in fb] != []
    # A replay raises the same alert under the same id, so consumers can drop the copy.
    assert [x["alert_id"] for x in fa] == [x["alert_id"] for x in fb]
    sa, sb = a.to_dict()["versions"]["1"], b.to_dict()["versions"]["1"]
    # Everything learnt must match.
    for key in ("events", "windows", "reference", "reference_builder", "quality", "drift"):
        assert pack_state(sa[key]) == pack_state(sb[key]), key
    assert pack_state(sa["signal_rules"]["latency_ms"]) == pack_state(sb["signal_rules"]["latency_ms"])
    for signal in ("error_rate",):
        a_rule, b_rule = sa["signal_rules"][signal]["adwin"], sb["signal_rules"][signal]["adwin"]
        assert pack_state({k: v for k, v in a_rule.items() if k != "detector"}) == pack_state(
            {k: v for k, v in b_rule.items() if k != "detector"}
        )
    assert sa["lifecycle"]["active"].keys() == sb["lifecycle"]["active"].keys()


def test_a_restored_state_takes_the_performance_settings_of_now():
    a = ModelMonitor("m", SETTINGS)
    warm(a)
    later = dataclasses.replace(SETTINGS, performance_margin=0.2, performance_window=50)
    b = ModelMonitor.from_dict("m", later, a.to_dict())
    # What was learnt comes back; how to judge it is the configuration's, as for every other detector.
    assert (b.versions["1"].performance.margin, b.versions["1"].performance.window) == (0.2, 50)
    assert len(b.versions["1"].performance.pairs) == min(50, len(a.versions["1"].performance.pairs))


def test_fingerprint_differs_per_series():
    fps = {
        fingerprint("m", "1", "latency_ms", "zscore"),
        fingerprint("m", "2", "latency_ms", "zscore"),
        fingerprint("m", "1", "error_rate", "zscore"),
        fingerprint("n", "1", "latency_ms", "zscore"),
    }
    assert len(fps) == 4


def test_alert_schema_accepts_resolved_and_refuses_other_status():
    mon = ModelMonitor("m", SETTINGS)
    warm(mon)
    assert mon.versions["1"].rules("latency_ms")["zscore"].ready
    [alert] = mon.process([ev(500 + i, 800.0) for i in range(5)])
    validate("alert", {**alert, "status": "resolved"})
    with pytest.raises(Exception, match="status"):
        validate("alert", {**alert, "status": "pending"})


def test_dead_letter_is_schema_valid_and_keeps_bytes():
    raw = b"\x00\xffnot json"
    msg = dead_letter(
        Reject("not valid JSON: x", "invalid_json", raw, event_index=3),
        topic="inference-events",
        partition=2,
        offset=99,
        key=None,
    )
    validate("dead-letter", msg)
    assert base64.b64decode(msg["value_b64"]) == raw
    assert msg["source"]["event_index"] == 3
    assert msg["source"]["key_b64"] is None


def test_build_alert_from_finding_has_every_required_field():
    from stream.detectors import Finding

    finding = Finding(
        signal="latency_ms",
        detector="zscore",
        kind="anomaly",
        severity="warning",
        value=5.0,
        threshold=4.0,
        baseline={"median": 1.0},
        message="slow",
        event_time=10.0,
        window={"type": "tumbling", "start": 0.0, "end": 60.0, "size_s": 60.0},
    )
    alert = build_alert(finding, "m", "1", now=11.0)
    validate("alert", alert)
    assert alert["timestamp"] == 11.0


def _finding(t, kind="drift", signal="features.x", detector="reference_drift"):
    from stream.detectors import Finding

    window = {"type": "tumbling", "start": t - t % 60, "end": t - t % 60 + 60, "size_s": 60.0}
    return Finding(signal, detector, kind, "warning", 0.3, 0.1, {}, "moved", t, window)


def test_lifecycle_folds_repeats_and_publishes_again_after_the_cooldown():
    from stream.monitoring.alert_lifecycle import AlertLifecycle

    life = AlertLifecycle("m", "1", cooldown_s=300, resolve_after_s=120, sustained_s=10_000)
    published = []
    for t in range(0, 700, 60):
        published += life.observe([_finding(float(t))], float(t))
    assert [a["status"] for a in published] == ["firing", "firing", "firing"]
    assert published[1]["evidence"]["repeats"] == 4 and published[1]["evidence"]["firing_since"] == 0.0
    assert len({a["fingerprint"] for a in published}) == 1
    [resolved] = life.observe([], 900.0)
    assert resolved["status"] == "resolved" and resolved["severity"] == published[0]["severity"]
    validate("alert", resolved)


def test_sustained_drift_requests_retraining_once():
    from stream.monitoring.alert_lifecycle import AlertLifecycle

    life = AlertLifecycle("m", "1", cooldown_s=300, resolve_after_s=120, sustained_s=900)
    for t in range(0, 2000, 60):
        life.observe([_finding(float(t))], float(t))
    [request] = life.take_retrain_requests()
    validate("retrain-request", request)
    assert request["reason"] == "drift" and request["since"] == 0.0 and request["event_time"] >= 900
    assert life.take_retrain_requests() == []


def test_anomalies_never_request_retraining():
    from stream.monitoring.alert_lifecycle import AlertLifecycle

    life = AlertLifecycle("m", "1", sustained_s=60)
    for t in range(0, 600, 30):
        life.observe([_finding(float(t), kind="anomaly", signal="latency_ms", detector="zscore")], float(t))
    assert life.take_retrain_requests() == []


def test_a_saved_state_does_not_change_when_the_monitor_goes_on():
    # The table keeps the saved dict in memory; if it shared objects with the live
    # monitor, a poisoned record could not be undone by reloading it.
    mon = ModelMonitor("m", SETTINGS)
    warm(mon)
    mon.process([ev(300 + i, 900.0) for i in range(5)])
    saved = mon.to_dict()
    before = orjson.dumps(saved, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    mon.process([ev(400 + i, 10.0) for i in range(50)] + [ev(2_000 + i, 950.0) for i in range(5)])
    assert orjson.dumps(saved, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS) == before


def test_applied_offsets_survive_the_round_trip_per_partition():
    mon = ModelMonitor("m", SETTINGS)
    mon.mark_applied("events:0", 10)
    mon.mark_applied("labels:2", 3)
    again = ModelMonitor.from_dict("m", SETTINGS, decode_state(encode_state(mon.to_dict())))
    assert again.already_applied("events:0", 10) and again.already_applied("events:0", 9)
    assert not again.already_applied("events:0", 11)
    assert not again.already_applied("events:1", 0)
    assert again.already_applied("labels:2", 3) and not again.already_applied("labels:2", 4)


def test_dead_letter_of_a_huge_record_keeps_its_start_and_says_how_long_it_was():
    raw = b"x" * 1_000_000
    letter = dead_letter(Reject("too odd " * 2000, "invalid_schema", raw), topic="t", partition=0, offset=1, key=b"k")
    validate("dead-letter", letter)
    assert letter["value_bytes"] == 1_000_000
    assert base64.b64decode(letter["value_b64"]) == raw[: 256 * 1024]
    assert len(orjson.dumps(letter)) < 400_000 and len(letter["reason"]) == 4096


def test_alerts_do_not_depend_on_how_events_are_batched():
    # A worker catching up applies thousands of events at once; a quiet one, a few.
    # Each tumbling window must still be checked on its own, so both raise the same alerts.
    from stream.sdk.client import make_event

    def events(rng, t0):
        out = []
        for i in range(2200):
            shifted = i >= 1000
            x = rng.normal(0, 1, 3)
            out.append(
                make_event(
                    "shifty",
                    "1",
                    20.0 * float(np.exp(rng.normal(0, 0.1))),
                    0,
                    timestamp=t0 + (i / 100 if not shifted else 20 + (i - 1000) / 30),
                    features={"a": float(x[0]), "b": float(x[1] + (1.5 if shifted else 0.0)), "c": float(x[2])},
                )
            )
        return out

    outcomes = {}
    for size in (2200, 10):
        evs = events(np.random.default_rng(1), 1_700_000_000.0)
        mon = ModelMonitor(
            "shifty", DetectionSettings(window_s=10.0, zscore_warmup=100, retrain_after_s=20, reference_min_s=0)
        )
        alerts = []
        for i in range(0, len(evs), size):
            alerts += mon.process(evs[i : i + size])
        outcomes[size] = sorted((a["detector"], a["status"], a["window"]["start"]) for a in alerts)
    assert ("reference_drift", "firing", 1_700_000_020.0) in outcomes[10]
    assert outcomes[2200] == outcomes[10]


def test_a_spike_that_runs_into_the_next_windows_pages_once_within_the_cooldown():
    mon = ModelMonitor("m", SETTINGS)
    warm(mon)
    # Slow requests every few events, through three one-minute windows (events are 0.1 s apart).
    alerts = []
    for start in range(200, 2_000, 100):
        alerts += mon.process([ev(i, 900.0 if i % 5 == 0 else 10.0 + i % 4) for i in range(start, start + 100)])
    zscore = [a for a in alerts if a["detector"] == "zscore" and a["status"] == "firing"]
    windows = {int((1_000.0 + i * 0.1) // 60) for i in range(200, 2_000) if i % 5 == 0}
    assert len(windows) >= 3
    assert len(zscore) == 1


def test_throughput_is_right_in_the_middle_of_a_window():
    from stream.web.status import DriftCache, version_status

    mon = ModelMonitor("m", SETTINGS)
    # 100 events a second for the first 15 s of a 60 s window.
    mon.process([{"model_version": "1", "timestamp": 1_020.0 + i / 100, "latency_ms": 5.0} for i in range(1_500)])
    window = mon.summary()["versions"]["1"]["window"]
    assert window["throughput_per_s"] == pytest.approx(100.0, rel=0.01)
    current = version_status(mon.versions["1"], DriftCache())["current"]
    assert current["throughput_per_s"] == pytest.approx(100.0, rel=0.01)
    # Once the window is over, its whole length counts.
    mon.process([{"model_version": "1", "timestamp": 1_085.0, "latency_ms": 5.0}])
    closed = mon.versions["1"].windows.tumbling(1_030.0)
    assert closed.throughput(mon.versions["1"].windows.watermark) == pytest.approx(1_500 / 60)


def test_a_model_that_goes_quiet_raises_one_traffic_alert_resolved_when_records_return():
    from stream.web.status import DriftCache, model_status

    mon = ModelMonitor("quiet", SETTINGS)
    clock = 1_700_000_000.0
    for k in range(200):  # a record every 5 s for over 16 minutes
        mon.process([ev(k, 10.0 + k % 4)], arrived_at=clock + 5 * k)
    last = clock + 5 * 199
    assert mon.traffic.threshold() == pytest.approx(120.0)  # 3 x 5 s is below the 120 s floor
    assert mon.check_traffic(last + 100) == []
    [alert] = mon.check_traffic(last + 130)
    validate("alert", alert)
    assert (alert["kind"], alert["signal"], alert["detector"], alert["model_version"]) == (
        "traffic",
        "traffic",
        "silence",
        "*",
    )
    assert alert["value"] == 130 and alert["threshold"] == 120
    # Still silent: folded within the cooldown, not paged again.
    assert mon.check_traffic(last + 200) == []
    # The page reads the real clock, long past these times: the model shows as silent, its figures as stale.
    status = model_status(mon, DriftCache())
    assert status["health"] == "silent" and status["versions"][0]["stale"] is True
    # Records return: the alert resolves with them.
    resolved = [a for a in mon.process([ev(300, 10.0)], arrived_at=last + 260) if a["status"] == "resolved"]
    assert [a["fingerprint"] for a in resolved] == [alert["fingerprint"]]
    assert mon.check_traffic(last + 265) == []
    again = ModelMonitor.from_dict("quiet", SETTINGS, decode_state(encode_state(mon.to_dict())))
    assert again.traffic.last_arrival == last + 260 and again.traffic.threshold() == mon.traffic.threshold()

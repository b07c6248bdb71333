"""Data quality against a reference, and reference profiles on disk."""

import os
import random

import orjson
import pytest

from stream.contracts.schemas import validate
from stream.detectors.quality import DataQualityRule
from stream.monitoring.model_monitor import ModelMonitor
from stream.monitoring.profiles import ProfileError, ProfileStore, ReferenceProfile, build_profile, profile_path
from stream.settings import DetectionSettings
from stream.stats import WindowStats
from stream.worker.state_codec import decode_state, encode_state


def events(n, seed=0, t0=0.0, missing=0.02, country=None, amount_shift=0.0, rate=50.0, version="1"):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(
            {
                "model": "m",
                "model_version": version,
                "timestamp": t0 + i / rate,
                "latency_ms": 10.0 + rng.random(),
                "prediction": 1,
                "features": {
                    "amount": None if rng.random() < missing else rng.gauss(100, 10) + amount_shift,
                    "country": country or rng.choice(["DE", "FR", "US"]),
                },
            }
        )
    return out


def reference(n=2000):
    ref = WindowStats(0, 1)
    ref.update(events(n, seed=1))
    return ref


def check(rule, batch):
    window = WindowStats(0.0, rule.window_s)
    window.update(batch)
    return rule.update(batch, window)


def test_normal_windows_raise_nothing():
    rule = DataQualityRule(reference())
    for k in range(20):
        window = WindowStats(k * 60.0, k * 60.0 + 60)
        batch = events(3000, seed=100 + k, t0=k * 60.0)
        window.update(batch)
        assert rule.update(batch, window) == [], k


def test_missing_rate_jump_names_feature_rate_and_baseline():
    [finding] = check(DataQualityRule(reference()), events(500, seed=2, missing=0.4))
    assert finding.detector == "missing_rate" and finding.signal == "features.amount"
    assert finding.kind == "data_quality"
    assert finding.evidence["observed_rate"] == pytest.approx(0.4, abs=0.06)
    assert finding.baseline["missing_rate"] == pytest.approx(0.02, abs=0.01)
    assert "'amount'" in finding.message and "reference" in finding.message


def test_small_window_needs_a_bigger_jump():
    rule = DataQualityRule(reference(), min_events=20)
    # 3 of 30 missing (10 %) is within noise for so few events.
    batch = events(30, seed=3, missing=0.0)
    for e in batch[:3]:
        e["features"]["amount"] = None
    assert check(rule, batch) == []


def test_unseen_category_out_of_range_and_wrong_type():
    batch = events(400, seed=4, country="BR", amount_shift=500)
    batch[0]["features"]["amount"] = "a lot"
    found = {f.detector: f for f in check(DataQualityRule(reference()), batch)}
    assert set(found) == {"unseen_category", "out_of_range", "wrong_type"}
    assert found["unseen_category"].evidence["unseen"][0]["value"] == "BR"
    # The first test is due at min_events (50), inside the batch: it sees the window as it stood then.
    assert {f.evidence["window_count"] for f in found.values()} == {50}
    assert found["out_of_range"].evidence["above"] >= 45
    assert found["wrong_type"].evidence["wrong_type"] == 1


@pytest.mark.parametrize("batch", [1, 7, 64, 1000])
def test_tests_fall_at_the_same_counts_and_decide_alike_whatever_the_batching(batch):
    # Normal at first; then the amount goes missing, BR appears and a wrong type, each partway through.
    stream = events(1000, seed=11, t0=0.0, rate=20.0)
    for i, e in enumerate(stream):
        if i >= 260 and i % 3:
            e["features"]["amount"] = None
        if i >= 420:
            e["features"]["country"] = "BR" if i % 2 else e["features"]["country"]
        if i == 700:
            e["features"]["amount"] = "broken"
    rule, window, found = DataQualityRule(reference()), WindowStats(0.0, 60.0), []
    for i in range(0, len(stream), batch):
        window.update(stream[i : i + batch])
        found += rule.update(stream[i : i + batch], window)
    seen = [(f.detector, f.evidence["window_count"], f.value, f.event_time) for f in found]
    # One-event batches test the window exactly as it stood: that is the answer for every batching.
    rule, window, expected = DataQualityRule(reference()), WindowStats(0.0, 60.0), []
    for e in stream:
        window.update([e])
        expected += rule.update([e], window)
    assert seen == [(f.detector, f.evidence["window_count"], f.value, f.event_time) for f in expected]
    assert [d for d, *_ in seen] == ["missing_rate", "unseen_category", "wrong_type"]
    # Tests at 50, 100, 150, 200, 250, 312, 390, 487, 608, 760, 950: each change is caught at the first after it.
    assert [n for _, n, *_ in seen] == [312, 487, 760]


def test_feature_missing_entirely_counts_as_missing():
    batch = events(200, seed=5)
    for e in batch:
        del e["features"]["country"]
    [finding] = check(DataQualityRule(reference()), batch)
    assert finding.signal == "features.country" and finding.evidence["observed_rate"] == 1.0


def test_each_check_fires_once_per_window():
    rule = DataQualityRule(reference())
    window = WindowStats(0.0, 60.0)
    first = events(200, seed=6, country="BR")
    window.update(first)
    assert len(rule.update(first, window)) == 1
    more = events(200, seed=7, country="BR", t0=10)
    window.update(more)
    assert rule.update(more, window) == []


def test_monitor_learns_reference_from_first_events_then_alerts(tmp_path):
    settings = DetectionSettings(reference_events=500, reference_min_s=0, zscore_warmup=100)
    mon = ModelMonitor("m", settings)
    assert mon.process(events(500, seed=8)) == []
    assert mon.versions["1"].reference.source == "first_events"
    alerts = mon.process(events(300, seed=9, t0=20, missing=0.5))
    assert [a["detector"] for a in alerts] == ["missing_rate"]
    validate("alert", alerts[0])
    # The reference survives a round trip through the table's JSON.
    back = ModelMonitor.from_dict("m", settings, decode_state(encode_state(mon.to_dict())))
    assert back.versions["1"].reference.events == 500


def test_profile_file_round_trip_and_lookup(tmp_path):
    profile = build_profile(events(1000, seed=10), "m", source="file:train.jsonl")
    assert profile.events == 1000
    path = profile_path(tmp_path, "m")
    profile.save(path)
    data = orjson.loads(path.read_bytes())
    assert (data["format"], data["format_version"], data["model"]) == ("stream-monitor-profile", 1, "m")
    store = ProfileStore(tmp_path)
    loaded = store("m", "7")
    assert loaded is not None and loaded.stats.summary() == profile.stats.summary()
    # A version's own profile wins over the model's.
    build_profile(events(10, seed=11), "m").save(profile_path(tmp_path, "m", "7"))
    assert store("m", "7").events == 10
    # A profile file rewritten is read again.
    build_profile(events(20, seed=11), "m").save(profile_path(tmp_path, "m", "7"))
    os.utime(profile_path(tmp_path, "m", "7"), (1, 1))
    assert store("m", "7").events == 20


def test_monitor_uses_a_profile_file(tmp_path):
    build_profile(events(1000, seed=12), "m").save(profile_path(tmp_path, "m"))
    mon = ModelMonitor("m", DetectionSettings(), profiles=ProfileStore(tmp_path))
    alerts = mon.process(events(200, seed=13, country="BR"))
    # All-new categories are a data-quality finding and a drift of that feature.
    assert [a["detector"] for a in alerts] == ["unseen_category", "reference_drift"]
    assert alerts[1]["signal"] == "features.country"
    assert mon.versions["1"].reference.source == "events"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"not json", "cannot read profile"),
        (b'{"format": "other"}', "not a stream-monitor profile"),
        (b'{"format": "stream-monitor-profile", "format_version": 99}', "format_version 99"),
        (b'{"format": "stream-monitor-profile", "format_version": 1}', "malformed profile"),
    ],
)
def test_bad_profile_files_are_refused_clearly(tmp_path, content, words):
    path = tmp_path / "m.profile.json"
    path.write_bytes(content)
    with pytest.raises(ProfileError, match=words):
        ReferenceProfile.load(path)


def test_build_refuses_when_no_event_matches():
    with pytest.raises(ProfileError, match="no events of model 'x'"):
        build_profile(events(10), "x")

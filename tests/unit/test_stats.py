"""Window statistics against numpy, event-time placement, lateness and merging."""

import random

import numpy as np
import pytest

from stream.stats import CategoricalStats, EventTimeWindows, FeatureSet, RunningMoments, WindowStats
from stream.stats.features import MAX_CATEGORY_CHARS
from stream.worker.state_codec import pack_state


def test_moments_match_numpy_and_merge_exactly():
    rng = random.Random(3)
    values = [rng.lognormvariate(2, 0.5) for _ in range(1000)]
    whole, left, right, batch = RunningMoments(), RunningMoments(), RunningMoments(), RunningMoments()
    for i, x in enumerate(values):
        whole.update(x)
        (left if i < 370 else right).update(x)
    batch.update_many(values[:500])
    batch.update_many(np.array(values[500:]))
    for m in (whole, left.merge(right), batch):
        assert m.count == 1000
        assert m.mean == pytest.approx(np.mean(values), rel=1e-12)
        assert m.std == pytest.approx(np.std(values, ddof=1), rel=1e-9)
        assert (m.min, m.max) == (min(values), max(values))


def test_moments_round_trip_including_empty():
    m = RunningMoments()
    assert RunningMoments.from_dict(m.to_dict()).count == 0
    m.update(3.0)
    m.update(5.0)
    back = RunningMoments.from_dict(m.to_dict())
    assert (back.count, back.mean, back.var, back.min, back.max) == (2, 4.0, 2.0, 3.0, 5.0)


def random_events(n, seed=0, t0=0.0, rate=100.0):
    rng = np.random.default_rng(seed)
    latency = rng.lognormal(3, 0.4, n)
    amount = rng.normal(100, 20, n)
    confidence = rng.uniform(0.5, 1.0, n)
    countries = rng.choice(["DE", "FR", "US", "GB"], n, p=[0.4, 0.3, 0.2, 0.1])
    missing = rng.uniform(0, 1, n) < 0.1
    errors = rng.uniform(0, 1, n) < 0.05
    events = []
    for i in range(n):
        events.append(
            {
                "timestamp": t0 + i / rate,
                "latency_ms": float(latency[i]),
                "confidence": float(confidence[i]),
                "prediction": int(i % 3 == 0),
                "error": "timeout" if errors[i] else None,
                "tokens_in": int(10 + i % 50),
                "features": {"amount": None if missing[i] else float(amount[i]), "country": str(countries[i])},
            }
        )
    return events


def test_window_statistics_match_numpy():
    events = random_events(20_000, seed=1)
    w = WindowStats(0.0, 200.0)
    for i in range(0, len(events), 777):
        w.update(events[i : i + 777])
    s = w.summary()
    latency = np.array([e["latency_ms"] for e in events])
    assert s["count"] == 20_000
    assert s["throughput_per_s"] == pytest.approx(100.0)
    assert s["error_rate"] == pytest.approx(np.mean([e["error"] is not None for e in events]))
    assert s["latency_ms"]["mean"] == pytest.approx(latency.mean())
    assert s["latency_ms"]["std"] == pytest.approx(latency.std(ddof=1))
    for q, key in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        assert s["latency_ms"][key] == pytest.approx(np.quantile(latency, q), rel=0.011)
    amounts = np.array([e["features"]["amount"] for e in events if e["features"]["amount"] is not None])
    f = s["features"]["amount"]
    assert f["missing_rate"] == pytest.approx(1 - len(amounts) / 20_000)
    assert f["mean"] == pytest.approx(amounts.mean())
    assert f["std"] == pytest.approx(amounts.std(ddof=1))
    assert (f["min"], f["max"]) == (amounts.min(), amounts.max())
    assert f["quantiles"]["p50"] == pytest.approx(np.quantile(amounts, 0.5), rel=0.011)
    c = s["features"]["country"]
    assert c["distinct"] == 4
    top = {t["value"]: t["share"] for t in c["top"]}
    assert top["DE"] == pytest.approx(np.mean([e["features"]["country"] == "DE" for e in events]))
    classes = {t["value"]: t["count"] for t in s["prediction"]["classes"]}
    assert classes == {"1": sum(e["prediction"] for e in events), "0": sum(1 - e["prediction"] for e in events)}
    assert s["tokens_in"]["mean"] == pytest.approx(np.mean([e["tokens_in"] for e in events]))
    assert s["confidence"]["p50"] == pytest.approx(np.median([e["confidence"] for e in events]), rel=0.011)


def test_ten_minute_view_from_one_minute_panes_equals_one_window_of_everything():
    events = random_events(60_000, seed=2, rate=100.0)  # 600 s of event time
    windows = EventTimeWindows(tumbling_s=60, hopping_s=600, hop_s=60, lateness_s=0)
    for i in range(0, len(events), 1000):
        windows.update(events[i : i + 1000])
    assert len(windows.panes) == 10
    hopping = windows.hopping()
    whole = WindowStats(0.0, 600.0)
    whole.update(events)
    assert hopping.count == whole.count == 60_000
    assert hopping.latency.sketch == whole.latency.sketch
    assert hopping.summary()["latency_ms"] == pytest.approx(whole.summary()["latency_ms"])
    assert hopping.summary()["features"]["amount"]["quantiles"] == whole.summary()["features"]["amount"]["quantiles"]
    assert windows.tumbling().count == 6000


def test_on_time_late_and_too_late_events():
    w = EventTimeWindows(tumbling_s=60, hopping_s=120, hop_s=60, lateness_s=30)
    w.update([{"timestamp": 100.0, "latency_ms": 1.0}])  # watermark 100
    # [60, 120) is the current pane: on time even if out of order.
    assert len(w.update([{"timestamp": 61.0, "latency_ms": 1.0}])) == 1
    w.update([{"timestamp": 140.0, "latency_ms": 1.0}])  # watermark 140
    # [60, 120) ended 20 s before the watermark: late but within 30 s lateness.
    assert len(w.update([{"timestamp": 70.0, "latency_ms": 1.0}])) == 1
    assert w.late == 1
    # [0, 60) ended 80 s before: too late.
    assert w.update([{"timestamp": 59.0, "latency_ms": 1.0}]) == []
    assert w.too_late == 1
    assert w.events == 4
    assert w.tumbling(at=70.0).count == 3


def test_replayed_traffic_lands_by_its_own_timestamps():
    w = EventTimeWindows(tumbling_s=60, hopping_s=600, hop_s=60)
    old = [{"timestamp": 1_000_000.0 + i, "latency_ms": 1.0} for i in range(120)]
    w.update(old)
    assert {start: p.count for start, p in w.panes.items()} == {999_960.0: 20, 1_000_020.0: 60, 1_000_080.0: 40}


def test_expired_panes_are_dropped():
    w = EventTimeWindows(tumbling_s=60, hopping_s=600, hop_s=60, lateness_s=30)
    for minute in range(100):
        w.update([{"timestamp": minute * 60.0 + 1, "latency_ms": 1.0}])
    assert len(w.panes) == 10
    assert w.hopping().count == 10


def test_state_round_trip():
    w = EventTimeWindows(tumbling_s=60, hopping_s=300, hop_s=60)
    w.update(random_events(3000, seed=3))
    back = EventTimeWindows.from_dict(w.to_dict())
    assert back.hopping().summary() == w.hopping().summary()
    assert back.watermark == w.watermark


def test_feature_cap_and_wrong_types():
    fs = FeatureSet(max_features=2)
    fs.update([{"a": 1.0, "b": "x", "c": 5}, {"a": "oops", "b": 3, "d": 1}])
    assert set(fs.features) == {"a", "b"}
    assert fs.untracked == 2 and fs.untracked_names == ["c", "d"]
    assert (fs.features["a"].wrong_type, fs.features["a"].missing) == (1, 0)
    assert (fs.features["b"].wrong_type, fs.features["b"].missing) == (1, 0)


def test_categories_are_bounded_and_merge_keeps_the_most_frequent():
    a, b = CategoricalStats(max_categories=3), CategoricalStats(max_categories=3)
    a.update_many(["x"] * 5 + ["y"] * 3 + ["z"])
    b.update_many(["w"] * 10 + ["y"])
    merged = a.merge(b)
    assert merged.counts == {"w": 10, "x": 5, "y": 4, "__other__": 1}
    assert merged.distinct_capped


@pytest.mark.parametrize(
    "kwargs", [{"tumbling_s": 0}, {"hopping_s": 90, "hop_s": 60}, {"lateness_s": -1}, {"tumbling_s": 1.5}]
)
def test_bad_window_sizes_are_refused(kwargs):
    with pytest.raises(ValueError):
        EventTimeWindows(**kwargs)


def test_every_pane_tracks_the_same_capped_feature_set():
    w = EventTimeWindows(tumbling_s=60, hopping_s=120, hop_s=60, max_features=2)
    w.update([{"timestamp": 1.0, "latency_ms": 1.0, "features": {"a": 1.0, "b": 2.0}}])
    w.update([{"timestamp": 61.0, "latency_ms": 1.0, "features": {"c": 1.0, "b": 2.0, "d": 0.0}}])
    assert list(w.feature_names) == ["a", "b"]
    assert w.untracked_features == 2 and w.untracked_names == ["c", "d"]
    assert set(w.hopping().features.features) == {"a", "b"}
    assert set(w.panes[60.0].features.features) == {"b"}


def test_long_category_values_and_many_error_kinds_stay_bounded():
    w = WindowStats(0.0, 60.0, max_categories=3)
    events = [
        {"timestamp": 1.0, "latency_ms": 1.0, "error": f"timeout for request {i}", "features": {"text": "x" * 100_000}}
        for i in range(10)
    ]
    w.update(events)
    state = w.to_dict()
    assert len(pack_state(state)) < 20_000
    assert sum(w.error_kinds.values()) == 10 and len(w.error_kinds) == 4  # 3 kinds and the rest as other
    [category] = w.features.features["text"].counts
    assert len(category) == MAX_CATEGORY_CHARS and category.endswith("…")

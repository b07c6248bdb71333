"""Each detector fires on a clear change, stays silent on a stationary stream of
the same length, and survives pickling and its state round trip."""

import json
import pickle

import numpy as np
import orjson
import pytest

from stream.detectors.iqr import IQRRule
from stream.detectors.performance import PerformanceRule
from stream.detectors.reference_drift import ReferenceDriftRule, categorical_drift, js_distance, numeric_drift, psi
from stream.detectors.stream_drift import StreamDriftRule
from stream.monitoring.label_join import JsonEntries, LabelJoiner
from stream.stats import WindowStats
from stream.worker.state_codec import pack_state, unpack_state

N = 6000


def feed(rule, values, t0=0.0, rate=100.0, batch=100):
    found = []
    times = [t0 + i / rate for i in range(len(values))]
    for i in range(0, len(values), batch):
        found += rule.update(list(values[i : i + batch]), times[i : i + batch])
    return found


@pytest.mark.parametrize("method", ["adwin", "page_hinkley", "kswin"])
def test_stream_drift_fires_on_a_shift_and_not_on_noise(method):
    rng = np.random.default_rng(1)
    quiet = StreamDriftRule("features.x", method)
    assert feed(quiet, rng.normal(50, 10, 2 * N)) == []
    rule = StreamDriftRule("features.x", method)
    values = np.concatenate([rng.normal(50, 10, N), rng.normal(70, 10, N)])
    found = feed(rule, values)
    assert found, method
    first = found[0]
    assert N <= first.event_time * 100 < N + 500
    assert first.evidence["after"] > first.evidence["before"]
    clone = pickle.loads(pickle.dumps(rule))
    assert feed(clone, rng.normal(70, 10, 500), t0=200) == feed(rule, rng.normal(70, 10, 0), t0=200) == []


def test_stream_drift_direction_filter_and_state_round_trip():
    rng = np.random.default_rng(2)
    rule = StreamDriftRule("error_rate", "adwin", direction="up")
    feed(rule, (rng.uniform(0, 1, N) < 0.2).astype(float))
    # Errors falling is no incident.
    assert feed(rule, (rng.uniform(0, 1, N) < 0.01).astype(float), t0=60) == []
    copy = StreamDriftRule("error_rate", "adwin", direction="up")
    copy.load_state(unpack_state(pack_state(rule.to_dict())))
    rising = (rng.uniform(0, 1, 2000) < 0.3).astype(float)
    a, b = feed(rule, rising, t0=200), feed(copy, rising, t0=200)
    # The restored ADWIN is rebuilt from the inputs it kept: the same rise, within its check interval (32).
    assert len(a) == len(b) == 1 and abs(a[0].event_time - b[0].event_time) * 100 <= 64
    assert b"pickle" not in pack_state(rule.to_dict())


def test_iqr_fires_on_a_spike_not_on_noise_and_round_trips():
    rng = np.random.default_rng(3)
    assert feed(IQRRule("latency_ms"), rng.lognormal(3, 0.3, 2 * N)) == []
    rule = IQRRule("latency_ms")
    feed(rule, rng.lognormal(3, 0.3, N))
    copy = IQRRule("latency_ms")
    copy.load_state(orjson.loads(orjson.dumps(rule.to_dict(), option=orjson.OPT_NON_STR_KEYS)))
    spike = rng.lognormal(3, 0.3, 300) * 8
    a, b = feed(rule, spike, t0=60), feed(copy, spike, t0=60)
    assert len(a) == 1 and [f.evidence for f in a] == [f.evidence for f in b]
    assert a[0].baseline["fence_high"] < spike.min()
    assert pickle.loads(pickle.dumps(rule)).to_dict()["seen"] == rule.to_dict()["seen"]


def window_of(values, categorical=False, start=0.0):
    w = WindowStats(start, start + 60)
    w.update(
        [
            {"timestamp": start, "latency_ms": 1.0, "features": {"x": f"c{int(v)}" if categorical else float(v)}}
            for v in values
        ]
    )
    return w


def test_reference_drift_scores():
    rng = np.random.default_rng(4)
    ref = window_of(rng.normal(0, 1, 3000))
    same = numeric_drift(ref.features.features["x"], window_of(rng.normal(0, 1, 1000)).features.features["x"])
    moved = numeric_drift(ref.features.features["x"], window_of(rng.normal(1, 1, 1000)).features.features["x"])
    assert same["p_value"] > 0.001 and same["psi"] < 0.1
    assert moved["p_value"] < 1e-10 and moved["psi"] > 0.25
    assert 0.8 < moved["wasserstein_std"] < 1.2
    assert moved["js"] > same["js"]
    cref = window_of(rng.choice(4, 3000, p=[0.4, 0.3, 0.2, 0.1]), categorical=True)
    cnew = window_of(rng.choice(4, 1000, p=[0.1, 0.2, 0.3, 0.4]), categorical=True)
    mix = categorical_drift(cref.features.features["x"], cnew.features.features["x"])
    assert mix["p_value"] < 1e-10 and mix["top_changes"][0]["category"] in ("c0", "c3")
    assert psi(np.array([0.25] * 4), np.array([0.25] * 4)) == pytest.approx(0.0)


def test_reference_drift_is_silent_on_many_stationary_windows_and_fires_once_per_window():
    rng = np.random.default_rng(5)
    rule = ReferenceDriftRule(window_of(rng.normal(0, 1, 2000)))
    for k in range(30):
        assert rule.check(window_of(rng.normal(0, 1, 1000), start=60.0 * k), 60.0 * k) == []
    window = window_of(rng.normal(2, 1, 1000), start=6000.0)
    assert len(rule.check(window, 6000.0)) == 1
    window.update([{"timestamp": 6001.0, "latency_ms": 1.0, "features": {"x": 5.0}}] * 500)
    assert rule.check(window, 6001.0) == []
    restored = ReferenceDriftRule(rule.reference)
    restored.load_state(orjson.loads(orjson.dumps(rule.to_dict())))
    assert restored.check(window, 6002.0) == []


def test_reference_drift_decides_on_the_decisive_scores_and_its_alert_ranks_with_every_score():
    """A test reading KS and PSI alone decides as one reading every score; a firing one ranks with every score."""
    rng = np.random.default_rng(8)
    rule = ReferenceDriftRule(window_of(rng.lognormal(0, 1, 3000)))
    for k, shift in enumerate([0.0, 0.05, 0.1, 0.2, 0.4, 1.0]):
        window = window_of(rng.lognormal(shift, 1, 800), start=60.0 * k)
        screened, full = rule.scores(window, 0.001, full=False), rule.scores(window, 0.001)
        assert [(s["feature"], s["drifted"], s["psi"], s["p_value"]) for s in screened] == [
            (s["feature"], s["drifted"], s["psi"], s["p_value"]) for s in full
        ]
        assert "wasserstein_std" not in screened[0] and "wasserstein_std" in full[0]
    found = ReferenceDriftRule(rule.reference).check(window_of(rng.lognormal(1.0, 1, 800), start=600.0), 600.0)
    assert len(found) == 1
    top = found[0].evidence["ranking"][0]
    assert top["feature"] == "features.x" and top["wasserstein_std"] > 0.3 and top["js"] > 0.1


def test_performance_monitor_silent_when_accuracy_holds_and_fires_when_it_drops():
    rng = np.random.default_rng(6)
    steady = PerformanceRule(window=200, reference_labels=200)
    found = []
    for i in range(5000):
        y = int(rng.integers(2))
        pred = y if rng.uniform() < 0.9 else 1 - y
        found += steady.update(y, pred, float(i))
    assert found == []
    assert steady.summary()["metrics"]["accuracy"] == pytest.approx(0.9, abs=0.05)
    for i in range(600):
        y = int(rng.integers(2))
        pred = y if rng.uniform() < 0.6 else 1 - y
        found += steady.update(y, pred, 5000.0 + i)
    detectors = {f.detector for f in found}
    assert "metric_drop" in detectors
    drop = next(f for f in found if f.detector == "metric_drop")
    assert drop.value < drop.threshold < drop.baseline["accuracy"]
    restored = PerformanceRule.from_dict(orjson.loads(orjson.dumps(steady.to_dict())))
    assert restored.summary() == steady.summary()


def test_performance_monitor_regression_metrics():
    perf = PerformanceRule(window=100, reference_labels=100, margin=0.2)
    found = []
    for i in range(300):
        found += perf.update(10.0 + (i % 3) * 0.5, 10.25, float(i))
    assert perf.task == "regression" and found == []
    for i in range(200):
        found += perf.update(10.0, 14.5, 300.0 + i)
    # Once per window of labels while it lasts; the alert lifecycle folds the repeats.
    assert found and {f.signal for f in found} == {"performance.mae"}


def test_label_join_in_both_orders_duplicates_and_expiry():
    store: dict = {}
    joiner = LabelJoiner(store, ttl_s=100)
    assert joiner.on_label("m", "early", 1, 5.0) == ("label_before_prediction", None)
    outcome, joined = joiner.on_prediction("m", "2", "early", 1, 4.0)
    assert outcome == "joined_label_first" and (joined.label, joined.model_version) == (1, "2")
    joiner.on_prediction("m", "1", "late", 0, 10.0)
    assert joiner.on_prediction("m", "1", "late", 0, 10.0) == ("duplicate_prediction", None)
    joiner.on_prediction("m", "1", "never", 0, 11.0)
    joiner.on_label("m", "orphan", 1, 12.0)
    assert joiner.on_label("m", "late", 1, 20.0)[0] == "joined"
    import time

    expired = {(model, outcome) for _, model, outcome in joiner.expired(now=time.time() + 1000)}
    assert ("m", "prediction_never_labelled") in expired and ("m", "label_never_matched") in expired


def test_label_join_entries_survive_json_and_carry_confidence_and_segment():
    # As the worker keeps them: each entry as its JSON text, what the changelog carries.
    raw = {}
    joiner = LabelJoiner(JsonEntries(raw), ttl_s=100)
    joiner.on_prediction("m", "3", "r", 1, 10.0, confidence=0.875, segment="eu")
    joiner.on_prediction("m", "3", "only-segment", 0, 11.0, segment="us")
    _, joined = joiner.on_label("m", "r", 0, 30.0)
    assert (joined.model_version, joined.prediction, joined.label) == ("3", 1, 0)
    assert (joined.prediction_time, joined.label_time, joined.confidence, joined.segment) == (10.0, 30.0, 0.875, "eu")
    _, joined = joiner.on_label("m", "only-segment", 1, 31.0)
    assert (joined.confidence, joined.segment) == (None, "us")
    assert all(isinstance(value, bytes) for value in raw.values()) and len(raw) == 2


def test_label_join_reads_the_entries_an_older_worker_left_in_its_changelog():
    import time

    old = time.time() - 1000
    entries = {
        b"m\x1fwaiting": {"p": 1, "v": "2", "t": 10.0, "w": time.time(), "c": 0.75, "s": "eu"},
        b"m\x1fearly": {"l": 0, "lt": 12.0, "w": time.time()},
        b"m\x1fdone": {"done": 1, "w": time.time()},
        b"m\x1fstale": {"p": 0, "v": "2", "t": 1.0, "w": old},
    }
    # As Faust's json codec wrote them to the changelog (the standard library's json).
    joiner = LabelJoiner(JsonEntries({key: json.dumps(entry).encode() for key, entry in entries.items()}), ttl_s=100)
    outcome, joined = joiner.on_label("m", "waiting", 0, 20.0)
    assert outcome == "joined"
    assert (joined.model_version, joined.prediction, joined.confidence, joined.segment) == ("2", 1, 0.75, "eu")
    outcome, joined = joiner.on_prediction("m", "2", "early", 1, 11.0)
    assert outcome == "joined_label_first" and (joined.label, joined.label_time) == (0, 12.0)
    assert joiner.on_label("m", "done", 1, 21.0) == ("duplicate_label", None)
    assert [(k, outcome) for k, _, outcome in joiner.expired()] == [(b"m\x1fstale", "prediction_never_labelled")]


def correlated_events(rng, n, t0=0.0, odd=False):
    cov = [[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 1.0]]
    xs = rng.multivariate_normal([10.0, 20.0, 0.0], cov, n)
    if odd:
        xs[:, 1] = 20.0 - (xs[:, 0] - 10.0)  # a and b now move against each other
    return [{"timestamp": t0 + i * 0.01, "features": {"a": a, "b": b, "c": c}} for i, (a, b, c) in enumerate(xs)]


def test_mahalanobis_is_silent_on_correlated_noise_and_fires_on_a_broken_relation():
    from stream.detectors.multivariate import MahalanobisRule

    rng = np.random.default_rng(7)
    rule = MahalanobisRule(["a", "b", "c"])
    normal = correlated_events(rng, 60_000)
    assert [f for k in range(0, len(normal), 100) for f in rule.update(normal[k : k + 100])] == []
    odd = correlated_events(rng, 1000, t0=700.0, odd=True)
    found = [f for k in range(0, len(odd), 100) for f in rule.update(odd[k : k + 100])]
    assert [f.detector for f in found] == ["mahalanobis"]
    assert {w["feature"] for w in found[0].evidence["unusual_features"][:2]} == {"a", "b"}
    copy = MahalanobisRule(["a", "b", "c"])
    copy.load_state(unpack_state(pack_state(rule.to_dict())))
    assert np.allclose(copy.cov, rule.cov) and copy.seen == rule.seen
    assert pickle.loads(pickle.dumps(rule)).seen == rule.seen


def test_a_fading_correlation_is_a_correlation_drift_and_a_steady_one_is_not():
    from stream.detectors.multivariate import MahalanobisRule

    rng = np.random.default_rng(9)

    def run(rule, events):
        found = []
        for k in range(0, len(events), 100):
            rule.update(events[k : k + 100])
            ts = events[k]["timestamp"]
            start = ts - ts % 60
            count = sum(1 for e in events[: k + 100] if start <= e["timestamp"] < start + 60)
            found += rule.test_correlations(start, count, ts)
        return found

    rule = MahalanobisRule(["a", "b", "c"])
    assert run(rule, correlated_events(rng, 60_000)) == []
    # b becomes independent of a: no single vector is extreme, the relation is gone.
    xs = rng.multivariate_normal([10.0, 20.0, 0.0], np.eye(3), 3000)
    faded = [{"timestamp": 700.0 + i * 0.01, "features": {"a": a, "b": b, "c": c}} for i, (a, b, c) in enumerate(xs)]
    found = run(rule, faded)
    assert found and {f.detector for f in found} == {"correlation"}  # once per window it spans
    assert found[0].evidence["pairs"][0]["features"] == ["a", "b"]
    assert found[0].baseline["correlation"] > 0.7 and abs(found[0].value) < 0.3


def test_reference_drift_waits_a_window_for_a_shift_that_only_just_clears_its_floor():
    rng = np.random.default_rng(8)
    reference = window_of(rng.normal(0, 1, 30_000))

    def psi_of(shift):
        probe = ReferenceDriftRule(reference)
        return probe.scores(window_of(rng.normal(shift, 1, 2000)), 0.001)[0]

    weak = next(s for s in np.arange(0.2, 1.0, 0.02) if psi_of(s)["drifted"])
    assert psi_of(weak)["psi"] < 2 * psi_of(weak)["psi_floor"]
    rule = ReferenceDriftRule(reference)
    # A wander for one window, then back: nothing; the same shift held over two windows: one alert, in the second.
    assert rule.check(window_of(rng.normal(weak + 0.05, 1, 2000), start=0.0), 30.0) == []
    assert rule.check(window_of(rng.normal(0, 1, 2000), start=60.0), 90.0) == []
    assert rule.check(window_of(rng.normal(weak + 0.05, 1, 2000), start=120.0), 150.0) == []
    [finding] = rule.check(window_of(rng.normal(weak + 0.05, 1, 2000), start=180.0), 210.0)
    assert finding.signal == "features.x"
    # A large shift fires at once.
    fresh = ReferenceDriftRule(reference)
    assert len(fresh.check(window_of(rng.normal(1.5, 1, 2000), start=0.0), 30.0)) == 1


def test_js_distance_is_scipy_s_jensen_shannon_distance_in_base_2():
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(12)
    for bins in (2, 10, 40):
        for _ in range(50):
            p, q = rng.dirichlet(np.ones(bins)), rng.dirichlet(np.full(bins, 0.3))
            q[rng.integers(bins)] = 0.0  # an empty bin, as a window's often has
            p[0] -= 1e-12  # a rounding-error negative weight, as a difference of cdfs gives
            want = jensenshannon(np.clip(p, 0, None), np.clip(q, 0, None), base=2)
            assert js_distance(p, q) == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_mahalanobis_counts_a_batch_as_the_event_by_event_loop_does():
    """Runs of normal events counted at once: the same window counts, outliers, worst features and findings."""
    from stream.detectors.multivariate import MahalanobisRule
    from stream.stats.columns import BatchColumns

    def event_by_event(rule, events):
        # The loop the rule ran before its runs of normal events were counted at once.
        x = rule._matrix(BatchColumns(events))
        rule.correlations.accumulate(x, float(events[0]["timestamp"]))
        d2, z = rule._distances(x)
        limit = rule.distances.quantile(rule.quantile)
        findings, normal = [], np.ones(len(events), dtype=bool)
        for i, e in enumerate(events):
            ts = float(e["timestamp"])
            rule.count.see(ts)
            if d2[i] > limit * rule.margin:
                normal[i] = False
                if rule.outlier(float(d2[i]), z[i], x[i], ts):
                    findings.append(rule._finding(ts, limit * rule.margin))
        rule.distances.update_many(d2[normal])
        rule._learn(x[normal])
        return findings

    rng = np.random.default_rng(11)
    rule_of = lambda: MahalanobisRule(["a", "b", "c"], min_outliers=3, min_share=0.002)  # noqa: E731
    trained = rule_of()
    for k in range(0, 20_000, 500):
        trained.update(correlated_events(rng, 500, t0=k * 0.01))
    # Normal and broken vectors mixed, over a window boundary (t = 240), some in a row.
    events = correlated_events(rng, 3000, t0=220.0)
    odd = correlated_events(rng, 3000, t0=220.0, odd=True)
    for i in [*range(100, 110), *rng.choice(3000, 300, replace=False).tolist()]:
        events[i] = odd[i]
    batched, looped = rule_of(), rule_of()
    for rule in (batched, looped):
        rule.load_state(unpack_state(pack_state(trained.to_dict())))
    found_batched, found_looped = [], []
    for k in range(0, len(events), 700):
        found_batched += batched.update(events[k : k + 700])
        found_looped += event_by_event(looped, events[k : k + 700])
    assert len(found_batched) == 2  # one per window
    assert [f.evidence for f in found_batched] == [f.evidence for f in found_looped]
    assert pack_state(batched.to_dict()) == pack_state(looped.to_dict())


@pytest.mark.parametrize(
    ("ref_counts", "win_counts"),
    [((500, 300, 200), (480, 330, 190)), ((500, 300, 200), (200, 300, 500)), ((900, 60, 40), (700, 250, 50))],
)
def test_a_categorical_features_chi_square_is_scipys_test_of_homogeneity(ref_counts, win_counts):
    """Categories common enough not to be pooled: the 2 x 3 table's test as scipy.stats gives it."""
    from scipy.stats import chi2_contingency

    from stream.stats import CategoricalStats

    ref, win = CategoricalStats(), CategoricalStats()
    for stats, counts in ((ref, ref_counts), (win, win_counts)):
        stats.update_many([category for category, n in zip("xyz", counts, strict=True) for _ in range(n)])
    expected = chi2_contingency(np.array([ref_counts, win_counts]), correction=False)
    drift = categorical_drift(ref, win)
    assert drift["chi2"] == pytest.approx(expected.statistic, rel=1e-12)
    assert drift["p_value"] == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)

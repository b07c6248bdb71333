"""The z-score latency rule: quiet on noise, fast on incidents, restartable."""

import itertools
import math
import pickle
import random

import numpy as np
import pytest

from stream.detectors import ZScoreRule


def lognormal_stream(n, rng, median=12.0, sigma=0.25, start=0.0, rate=50.0):
    values = [median * math.exp(rng.gauss(0, sigma)) for _ in range(n)]
    times = [start + i / rate for i in range(n)]
    return values, times


def test_no_alarm_on_two_hours_of_normal_traffic():
    rng = random.Random(11)
    rule = ZScoreRule("latency_ms", window_s=60)
    values, times = lognormal_stream(360_000, rng)  # 50 events/s for 2 h
    assert rule.update(values, times) == []
    assert rule.seen == 360_000


def test_spike_is_caught_within_a_few_events_and_reported_with_its_baseline():
    rng = random.Random(5)
    rule = ZScoreRule("latency_ms", window_s=60)
    values, times = lognormal_stream(3000, rng)
    assert rule.update(values, times) == []
    spike_start = times[-1] + 0.02
    spike = [v * 8 for v in lognormal_stream(200, rng)[0]]
    spike_times = [spike_start + i / 50 for i in range(200)]
    findings = rule.update(spike, spike_times)
    assert len(findings) == 1
    finding = findings[0]
    # min_outliers=5 at 50 events/s: the alert comes within about 0.1 s of event time.
    assert finding.event_time - spike_start < 1.0
    assert finding.evidence["change_started_at"] == pytest.approx(spike_start)
    assert finding.value > finding.threshold == 4.0
    assert 10.0 < finding.baseline["median"] < 14.0
    assert finding.baseline["normal_high"] < min(spike)
    assert finding.severity == "critical"
    assert "above the normal range" in finding.message


def test_one_finding_per_window_then_again_in_the_next():
    rule = ZScoreRule("latency_ms", warmup=100, min_outliers=2, min_share=0.0, window_s=10)
    rule.update([10.0 + (i % 3) for i in range(100)], [i * 0.01 for i in range(100)])
    assert len(rule.update([500.0] * 10, [5.0] * 10)) == 1
    assert rule.update([500.0] * 10, [6.0] * 10) == []
    assert len(rule.update([500.0] * 10, [12.0] * 10)) == 1


def test_single_outliers_do_not_fire():
    rule = ZScoreRule("latency_ms", warmup=100, min_outliers=5, window_s=60)
    rule.update([10.0 + (i % 3) for i in range(1000)], [i * 0.01 for i in range(1000)])
    assert rule.update([900.0, 11.0, 900.0, 10.0], [20.0, 20.1, 20.2, 20.3]) == []
    assert rule.count.outliers == 2


def test_lasting_level_shift_becomes_the_new_normal():
    rng = random.Random(2)
    rule = ZScoreRule("latency_ms", window_s=60, half_life=500)
    values, times = lognormal_stream(3000, rng)
    rule.update(values, times)
    shifted, shifted_times = lognormal_stream(30_000, rng, median=40.0, start=times[-1] + 1)
    findings = rule.update(shifted, shifted_times)
    assert findings, "the shift itself must be reported"
    last_window = findings[-1].window["start"]
    later, later_times = lognormal_stream(6000, rng, median=40.0, start=shifted_times[-1] + 1)
    assert rule.update(later, later_times) == []
    assert last_window < shifted_times[-1]


def test_state_round_trip_continues_identically():
    rng = random.Random(8)
    values, times = lognormal_stream(2000, rng)
    a = ZScoreRule("latency_ms", window_s=10)
    a.update(values[:1000], times[:1000])
    b = ZScoreRule("latency_ms", window_s=10)
    b.load_state(a.to_dict())
    tail = values[1000:] + [400.0] * 20
    tail_times = times[1000:] + [times[-1] + 0.01] * 20
    fa = a.update(tail, tail_times)
    fb = b.update(tail, tail_times)
    assert [f.evidence for f in fa] == [f.evidence for f in fb]
    assert a.to_dict() == b.to_dict()
    assert pickle.loads(pickle.dumps(a)).to_dict() == a.to_dict()


def test_warmup_suppresses_findings():
    rule = ZScoreRule("latency_ms", warmup=100, min_outliers=1, min_share=0.0)
    assert rule.update([10.0] * 50 + [1000.0] * 10, [float(i) for i in range(60)]) == []
    assert not rule.ready


@pytest.mark.parametrize("kwargs", [{"threshold": 0}, {"warmup": 1}])
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        ZScoreRule("latency_ms", **kwargs)


def test_a_long_spike_keeps_alerting_in_every_window():
    # Incident values must not inflate the baseline's variance: a 15-s spike
    # across two 10-s windows alerts in both.
    rng = random.Random(7)
    rule = ZScoreRule("latency_ms", window_s=10)
    values, times = lognormal_stream(3000, rng, rate=150)
    rule.update(values, times)
    spike, _ = lognormal_stream(150 * 15, rng, median=96.0)
    start = math.ceil(times[-1] / 10) * 10 + 5
    spike_times = [start + i / 150 for i in range(len(spike))]
    windows = {f.window["start"] for f in rule.update(spike, spike_times)}
    assert windows == {start - 5, start + 5}


def _incident_stream():
    rng = random.Random(21)
    values, times = lognormal_stream(12_000, rng)  # settled after about 2,900 values
    for start in (4_000, 7_000, 9_500):  # three incidents of 40 slow requests, in different windows
        for i in range(start, start + 40):
            values[i] *= 10
    values[8_000:] = [v * 2 for v in values[8_000:]]  # and a lasting doubling
    return values, times


@pytest.mark.parametrize("batch", [7, 500, 12_000])
def test_same_findings_and_baseline_whatever_the_batching(batch):
    values, times = _incident_stream()

    def run(size):
        rule = ZScoreRule("latency_ms", window_s=60)
        found = [f for i in range(0, len(values), size) for f in rule.update(values[i : i + size], times[i : i + size])]
        return rule, [(f.event_time, f.evidence["outliers"], f.evidence["window_count"]) for f in found]

    one, one_found = run(1)
    other, other_found = run(batch)
    assert len(one_found) >= 3 and other_found == one_found
    assert (other.mean, other.var) == pytest.approx((one.mean, one.var), rel=1e-9)
    assert other.seen == one.seen == len(values)
    counted, expected = other.count.to_dict(), one.count.to_dict()
    assert counted.pop("max_score") == pytest.approx(expected.pop("max_score"), rel=1e-9)
    assert counted == expected


def test_the_baseline_is_the_documented_weighted_mean_and_variance():
    values, times = lognormal_stream(6_000, random.Random(22))
    rule = ZScoreRule("latency_ms", window_s=60)
    assert rule.update(values, times) == []
    # The recursion of the docstring, value by value: weight 1/n until it falls to alpha.
    mean = var = 0.0
    for n, x in enumerate(values, start=1):
        y, weight = math.log1p(x), max(rule.alpha, 1.0 / n)
        diff = y - mean
        mean += weight * diff
        var = (1.0 - weight) * (var + diff * weight * diff)
    assert (rule.mean, rule.var) == pytest.approx((mean, var), rel=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_batches_with_bursts_of_outliers_decide_as_value_by_value(seed):
    """Batches take runs of inliers through filters and outliers one by one; bursts of slow requests
    (each right after another) must still be counted, and the baseline kept, as one value at a time."""
    rng = np.random.default_rng(seed)
    values = rng.lognormal(3.0, 0.4, 6000)
    for start in rng.integers(3000, 5900, 12):
        values[start : start + rng.integers(1, 12)] *= 30.0
    times = np.arange(6000) * 0.05
    batched = ZScoreRule("latency_ms", warmup=200, half_life=500, window_s=10)
    alone = ZScoreRule("latency_ms", warmup=200, half_life=500, window_s=10)
    cuts = [0, *sorted(rng.choice(np.arange(1, 6000), 80, replace=False).tolist()), 6000]
    found = [f for lo, hi in itertools.pairwise(cuts) for f in batched.update(values[lo:hi], times[lo:hi])]
    expected = [f for i in range(6000) for f in alone.update(values[i : i + 1], times[i : i + 1])]
    # Filters and steps round differently: the scores agree to the last few bits, the decisions exactly.
    assert [(f.event_time, f.evidence["outliers"], f.window) for f in found] == [
        (f.event_time, f.evidence["outliers"], f.window) for f in expected
    ]
    assert [f.value for f in found] == pytest.approx([f.value for f in expected], rel=1e-9)
    assert len(found) >= 3
    state, other = batched.to_dict(), alone.to_dict()
    window, other_window = state.pop("window"), other.pop("window")
    assert window.pop("max_score") == pytest.approx(other_window.pop("max_score"), rel=1e-9)
    assert window == other_window
    assert state == pytest.approx(other, rel=1e-9)

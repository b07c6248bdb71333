"""Running moments and event-time tumbling windows."""

import random

import numpy as np
import pytest

from stream.stats import LatencyWindow, RunningMoments, TumblingWindows


def test_moments_match_numpy_and_merge_exactly():
    rng = random.Random(3)
    values = [rng.lognormvariate(2, 0.5) for _ in range(1000)]
    whole, left, right = RunningMoments(), RunningMoments(), RunningMoments()
    for i, x in enumerate(values):
        whole.update(x)
        (left if i < 370 else right).update(x)
    merged = left.merge(right)
    for m in (whole, merged):
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


def test_windows_follow_event_time_not_arrival_order():
    tw = TumblingWindows(size_s=60, keep=3)
    # Replayed traffic from long ago, arriving now, still lands by its own timestamps.
    for ts in (1_000_000.0, 1_000_061.0, 1_000_010.0, 1_000_059.9):
        tw.update(ts, latency_ms=10.0, error=False)
    counts = {w.start: w.count for w in tw.windows}
    assert counts == {999_960.0: 2, 1_000_020.0: 2}
    assert tw.too_late == 0


def test_events_older_than_kept_windows_are_counted_too_late():
    tw = TumblingWindows(size_s=10, keep=2)
    for ts in (0, 10, 20, 25):
        tw.update(ts, latency_ms=1.0, error=False)
    assert tw.update(5, latency_ms=1.0, error=False) is None
    assert tw.too_late == 1
    assert [w.start for w in tw.windows] == [10.0, 20.0]


def test_window_summary_and_round_trip():
    w = LatencyWindow(start=60.0, size_s=60.0)
    for latency, error in ((10.0, False), (20.0, True), (30.0, False), (40.0, True)):
        w.update(latency, error)
    summary = w.summary()
    assert summary["count"] == 4
    assert summary["error_rate"] == 0.5
    assert summary["throughput_per_s"] == pytest.approx(4 / 60)
    assert summary["latency_ms"]["mean"] == 25.0
    assert LatencyWindow.from_dict(w.to_dict()).summary() == summary


def test_window_size_must_be_positive():
    with pytest.raises(ValueError):
        TumblingWindows(size_s=0)

"""The quantile sketch against numpy: within its documented relative error."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.stats.sketch import BucketCounts, QuantileSketch, add_rows_to_sketches

QS = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


def within(sketch, data, alpha):
    data = np.sort(np.asarray(data))
    for q in QS:
        # The sketch answers a value within alpha of *some* sample value of that
        # rank; numpy's "lower"/"higher" bracket the rank we ask for.
        lo = np.quantile(data, q, method="lower")
        hi = np.quantile(data, q, method="higher")
        got = sketch.quantile(q)
        lo_bound = min(lo * (1 - alpha), lo * (1 + alpha))
        hi_bound = max(hi * (1 - alpha), hi * (1 + alpha))
        assert lo_bound - 1e-12 <= got <= hi_bound + 1e-12, (q, got, lo, hi)


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(1).lognormal(3, 1, 20_000),
        np.random.default_rng(2).normal(0, 50, 20_000),  # negative and positive
        np.random.default_rng(3).exponential(0.001, 20_000),
        np.concatenate([np.zeros(500), np.random.default_rng(4).uniform(0, 1, 5000)]),
    ],
    ids=["lognormal", "normal", "tiny", "with-zeros"],
)
@pytest.mark.parametrize("alpha", [0.01, 0.02])
def test_quantiles_within_relative_error(data, alpha):
    s = QuantileSketch(alpha)
    s.update_many(data)
    assert s.count == len(data)
    within(s, data, alpha)


def test_single_and_batch_updates_agree():
    data = np.random.default_rng(5).lognormal(2, 0.5, 3000)
    a, b = QuantileSketch(), QuantileSketch()
    for x in data:
        a.update(float(x))
    b.update_many(data)
    assert a == b


def test_merge_equals_one_sketch_of_everything():
    rng = np.random.default_rng(6)
    parts = [rng.lognormal(3, 0.7, 1000) for _ in range(10)]
    merged = QuantileSketch()
    for part in parts:
        s = QuantileSketch()
        s.update_many(part)
        merged = merged.merge(s)
    whole = QuantileSketch()
    whole.update_many(np.concatenate(parts))
    assert merged == whole
    within(merged, np.concatenate(parts), 0.01)


def test_nan_ignored_empty_none_and_round_trip():
    s = QuantileSketch()
    assert s.quantile(0.5) is None
    s.update(float("nan"))
    s.update_many([float("nan"), 1.0, 2.0, 3.0])
    assert s.count == 3
    back = QuantileSketch.from_dict(s.to_dict())
    assert back.quantiles([0.5, 0.99]) == s.quantiles([0.5, 0.99])
    assert set(s.quantiles([0.5, 0.95, 0.99])) == {"p50", "p95", "p99"}


def test_memory_is_bounded_by_max_buckets():
    s = QuantileSketch(0.01, max_buckets=100)
    s.update_many(np.logspace(-8, 8, 100_000))
    s.update_many(-np.logspace(-3, 3, 1_000))
    # Memory is one count per bucket from the lowest held to the highest, empty ones included.
    assert s.positive.span + s.negative.span <= 100
    assert s.positive.counts.nbytes + s.negative.counts.nbytes <= 100 * 8
    assert s.count == 101_000 and s.positive.counts.sum() + s.negative.counts.sum() + s.zeros == s.count
    # The top of the distribution keeps its accuracy when low buckets fold.
    assert s.quantile(0.99) == pytest.approx(np.quantile(np.logspace(-8, 8, 100_000), 0.99), rel=0.02)


def test_merge_refuses_different_accuracy():
    with pytest.raises(ValueError):
        QuantileSketch(0.01).merge(QuantileSketch(0.02))


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300),
    st.lists(st.floats(0, 1), min_size=1, max_size=20),
)
def test_table_quantiles_agree_with_quantile(values, qs):
    sketch = QuantileSketch()
    sketch.update_many(values)
    assert sketch.table().quantiles(qs).tolist() == pytest.approx([sketch.quantile(q) for q in qs], rel=1e-12)


def test_bucket_counts_widen_before_they_could_overflow():
    b = BucketCounts()
    b.add_counts(0, np.array([255]))
    assert b.counts.dtype == np.uint8
    b.add(np.array([0]))
    assert b.counts.tolist() == [256] and b.counts.dtype == np.uint16
    b.add_counts(0, np.array([65_535 - 256]))
    assert b.counts.dtype == np.uint16
    # One more in the full bucket would wrap a 16-bit count to 0.
    b.add(np.array([0, 1]))
    assert b.counts.tolist() == [65_536, 1] and b.counts.dtype == np.uint32
    b.add_counts(-1, np.array([2**32, 0, 7]))
    assert b.counts.tolist() == [2**32, 65_536, 8] and b.counts.dtype == np.int64
    back = BucketCounts.from_dict(b.to_dict())
    assert back == b and back.counts.dtype == np.int64 and back.total == b.total


def test_a_sketch_past_255_values_in_one_bucket_counts_them_all_when_rows_are_added_together():
    # The shared bincount adds a row's counts to each sketch's own array, narrowest first.
    sketches = [QuantileSketch() for _ in range(3)]
    for sketch in sketches:
        sketch.update_many(np.full(200, 5.0))
    add_rows_to_sketches(sketches, np.full((3, 100), 5.0))
    assert [s.count for s in sketches] == [300] * 3
    assert all(s.positive.counts.max() == 300 and s.positive.counts.dtype == np.uint16 for s in sketches)
    assert all(s.quantile(0.5) == pytest.approx(5.0, rel=0.01) for s in sketches)


def test_a_sketch_past_65535_values_in_one_bucket_counts_them_all():
    s = QuantileSketch()
    for _ in range(3):
        s.update_many(np.full(40_000, 2.0))
        add_rows_to_sketches([s], np.full((1, 40_000), -3.0))
    assert s.count == 240_000
    assert s.positive.counts.sum() == s.negative.counts.sum() == 120_000
    assert s.cdf([-3.1, -2.9, 2.1]).tolist() == [0.0, 0.5, 1.0]
    merged = s.merge(s)
    assert merged.positive.counts.max() == 240_000 and merged.quantile(0.75) == pytest.approx(2.0, rel=0.01)
    back = QuantileSketch.from_dict(s.to_dict())
    assert back == s and back.positive.counts.dtype == np.uint32

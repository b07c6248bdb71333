"""The hot path's shortcuts give exactly what the general computation gives.

Each shortcut is checked against numpy's or scipy's own answer on data
hypothesis draws (ties, constant rows, huge and tiny values, NaN and
infinities), since a detector whose decision moved by one ulp would no
longer replay alike.
"""

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stream.detectors.base import percentiles, row_medians

finite = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False, width=64)
any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda cols: hnp.arrays(np.float64, st.tuples(st.integers(1, 30), st.just(cols)), elements=finite)
    )
)
def test_row_medians_equal_numpys_median_bit_for_bit(rows):
    assert np.array_equal(row_medians(rows), np.median(rows, axis=1))
    assert np.array_equal(row_medians(rows, finite=True), np.median(rows, axis=1))


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 10), st.integers(1, 12)), elements=any_float))
def test_row_medians_agree_with_numpy_on_nan_and_infinities(rows):
    # The mean of two middles near the largest float overflows to infinity, in both; numpy warns of it.
    with np.errstate(over="ignore"):
        assert np.array_equal(row_medians(rows), np.median(rows, axis=1), equal_nan=True)


def test_row_medians_of_a_sliding_view_of_ties():
    x = np.repeat([1.0, 2.0, 2.0, 3.0], 10)
    view = np.lib.stride_tricks.sliding_window_view(x, 20)[::3]
    assert np.array_equal(row_medians(view), np.median(view, axis=1))


@pytest.mark.parametrize("cols", [10, 20, 30, 31])
def test_row_medians_of_big_batches_equal_numpys(cols):
    # Sorted rows rather than numpy's partition: the same numbers all the same, on skewed data and ties.
    rng = np.random.default_rng(cols)
    rows = 20_000 // cols + 7
    skewed = rng.lognormal(0.0, 3.0, (rows, cols))
    ties = rng.integers(0, 4, (rows, cols)).astype(np.float64)
    x = rng.standard_t(2, rows * 3 + cols)
    view = np.lib.stride_tricks.sliding_window_view(x, cols)[::3]
    for batch in (skewed, ties, view, -skewed):
        assert np.array_equal(row_medians(batch), np.median(batch, axis=1))
        assert np.array_equal(row_medians(batch, finite=True), np.median(batch, axis=1))


@settings(max_examples=300, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(0, 1e9, allow_nan=False, width=64)),
    st.floats(0.001, 1.0),
    st.one_of(st.none(), st.floats(0, 1e9, allow_nan=False, width=64)),
)
def test_level_shift_spread_filter_equals_scipys_lfilter_bit_for_bit(spreads, smoothing, typical):
    from scipy import signal

    from stream.detectors.level_shift import STRIDE, LevelShiftRule

    rule = LevelShiftRule("x", smoothing=smoothing)
    rule.typical = typical
    start = typical if typical is not None else float(spreads[0])
    w = 1 - (1 - smoothing) ** STRIDE
    expected = signal.lfilter([w], [1.0, w - 1.0], spreads, zi=[(1.0 - w) * start])[0]
    assert np.array_equal(rule._typical_after(spreads), expected)


def test_level_shift_windows_are_the_sliding_windows():
    from stream.detectors.level_shift import LevelShiftRule

    x = np.random.default_rng(3).normal(size=200)
    rule = LevelShiftRule("x", before=20, after=10)
    ratio, spread = rule._ratios(x, 40, 150, 3)
    windows = np.lib.stride_tricks.sliding_window_view(x[20:160], 30)[::3]
    left, right = windows[:, :20], windows[:, 20:]
    assert np.array_equal(ratio, np.abs(np.median(right, axis=1) - np.median(left, axis=1)))
    assert spread.shape == ratio.shape == (len(range(40, 151, 3)),)


def test_level_shift_spreads_are_the_pooled_mad_or_where_that_is_zero_the_standard_deviation():
    """For a signal that is nearly always 0 (most windows' MAD is zero) and a continuous one, screened together."""
    from stream.detectors.level_shift import MAD_TO_SD, _window_ratios

    rng = np.random.default_rng(4)
    signals = np.stack([(rng.random(300) < 0.05).astype(float), rng.normal(size=300)])
    _, spread = _window_ratios(signals, 40, 250, 20, 10, 3)
    flat_but_spread = []
    for row, x in zip(spread, signals, strict=True):
        windows = np.lib.stride_tricks.sliding_window_view(x[20:260], 30)[::3]
        left, right = windows[:, :20], windows[:, 20:]
        deviations = np.concatenate(
            [np.abs(left - np.median(left, axis=1)[:, None]), np.abs(right - np.median(right, axis=1)[:, None])],
            axis=1,
        )
        mad = np.median(deviations, axis=1) * MAD_TO_SD
        expected = [m if m > 0 else float(np.std(w)) for m, w in zip(mad.tolist(), windows, strict=True)]
        assert row.tolist() == expected
        flat_but_spread.append(sum(m == 0 and e > 0 for m, e in zip(mad.tolist(), expected, strict=True)))
    # Windows of the flag with a zero MAD and values that are not all equal, and none of the continuous signal.
    assert flat_but_spread[0] > 0 and flat_but_spread[1] == 0


values_with_gaps = st.one_of(
    st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0.0, -0.0, 1e-10, -1e-10, 1.0, np.nan]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda k: st.tuples(
            hnp.arrays(np.float64, st.tuples(st.just(k), st.integers(0, 30)), elements=values_with_gaps),
            st.lists(hnp.arrays(np.float64, st.integers(0, 20), elements=finite), min_size=k, max_size=k),
        )
    )
)
def test_numeric_stats_added_row_by_row_and_together_are_equal(case):
    """A model's numeric columns added in one call equal each column added on its own, after earlier values."""
    from stream.stats.features import NumericStats, add_rows_to_numeric_stats
    from stream.worker.state_codec import pack_state

    rows, earlier = case
    together, alone = [NumericStats() for _ in rows], [NumericStats() for _ in rows]
    for a, b, values in zip(together, alone, earlier, strict=True):
        a.update_many(values)
        b.update_many(values)
    add_rows_to_numeric_stats(together, rows)
    for stats, row in zip(alone, rows, strict=True):
        stats.update_many(row)
    for a, b in zip(together, alone, strict=True):
        assert pack_state(a.to_dict()) == pack_state(b.to_dict())


def test_sketches_of_values_spanning_many_magnitudes_added_together_equal_one_by_one():
    """Past MAX_SHARED_BUCKETS the rows go one by one; the counts are the same either way."""
    from stream.stats.sketch import MAX_SHARED_BUCKETS, QuantileSketch, add_rows_to_sketches

    rows = np.array([[1e-8, 1e300, 5.0, -1e-8, -1e300], [1.0, 2.0, -3.0, 0.0, 4.0]] * 50)
    together, alone = [QuantileSketch() for _ in rows], [QuantileSketch() for _ in rows]
    add_rows_to_sketches(together, rows)
    for sketch, row in zip(alone, rows, strict=True):
        sketch.update_many(row)
    assert len(rows) * 35_000 > MAX_SHARED_BUCKETS  # the first row spans about 35,000 buckets of each sign
    assert together == alone


feature_value = st.one_of(
    st.none(),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.integers(-1000, 1000),
    st.booleans(),
    st.sampled_from(["red", "blue", "7"]),
)
feature_rows = st.lists(
    st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b", "c"]), feature_value, max_size=3)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(feature_rows, feature_rows, st.integers(0, 40), st.integers(0, 40))
def test_features_counted_from_the_batchs_columns_equal_those_read_from_the_events(earlier, rows, i, j):
    """A window reading numeric features from columns extracted once (whole batch or a run of it) counts alike."""
    from stream.stats.columns import BatchColumns
    from stream.stats.features import FeatureSet
    from stream.worker.state_codec import pack_state

    start, stop = sorted((min(i, len(rows)), min(j, len(rows))))
    events = [{"features": row} if row is not None else {} for row in rows]
    part = BatchColumns(events).part(start, stop)
    for columns, run in ((BatchColumns(events), rows), (part, rows[start:stop])):
        if not run:
            continue
        kinds_read: dict[str, str] = {}
        kinds_given: dict[str, str] = {}
        read, given = FeatureSet(max_features=2), FeatureSet(max_features=2)
        read.update(earlier, kinds=kinds_read)
        given.update(earlier, kinds=kinds_given)
        read.update(run, kinds=kinds_read)
        given.update(run, kinds=kinds_given, columns=columns)
        assert pack_state(given.to_dict()) == pack_state(read.to_dict())
        assert kinds_given == kinds_read


sketch_values = hnp.arrays(
    np.float64,
    st.integers(1, 60),
    elements=st.one_of(finite, st.sampled_from([0.0, 1.0, -1.0, 2.5])),
)


@settings(max_examples=300, deadline=None)
@given(sketch_values, sketch_values, sketch_values)
def test_paired_counts_read_the_ks_distance_and_cdf_of_each_pair_as_its_tables_do(a, b, c):
    """Side by side, pairs of different spans in one array: each row's KS statistic is the largest gap of the two
    tables' CDFs over their merged values, and the right sketch's CDF at the left's buckets is its table's there."""
    from stream.stats.paired_counts import PairedCounts
    from stream.stats.sketch import QuantileSketch

    sketches = []
    for values in (a, b, c):
        sketches.append(QuantileSketch())
        sketches[-1].update_many(values)
    pairs = [(sketches[0], sketches[1]), (sketches[1], sketches[0]), (sketches[2], sketches[0]), (sketches[2],) * 2]
    paired = PairedCounts(pairs)
    for i, (left, right) in enumerate(pairs):
        tl, tr = left.table(), right.table()
        grid = np.union1d(tl.values, tr.values)
        assert paired.ks_distances()[i] == float(np.max(np.abs(tl.cdf(grid) - tr.cdf(grid))))
    # One bucket of each left sketch, the same number per row.
    chosen = [np.array([0, len(left.table().values) - 1]) for left, _ in pairs]
    buckets = [left.buckets() for left, _ in pairs]
    signs = np.stack([s[at] for (s, _), at in zip(buckets, chosen, strict=True)])
    keys = np.stack([k[at] for (_, k), at in zip(buckets, chosen, strict=True)])
    read = paired.right_cdf_at(signs, keys)
    for i, ((left, right), at) in enumerate(zip(pairs, chosen, strict=True)):
        assert read[i].tolist() == right.table().cdf(left.table().values[at]).tolist()


@settings(max_examples=100, deadline=None)
@given(sketch_values, sketch_values, st.floats(-3.0, 3.0))
def test_the_reference_tests_scores_are_read_from_the_tables_of_reference_and_window(ref_values, extra, shift):
    """KS, its p-value and PSI over the reference's deciles, against the same figures computed from the two
    tables by hand, for two features tested together."""
    from scipy import special

    from stream.detectors.reference_drift import DECILES, NOISE_ALPHA, ReferenceDriftRule
    from stream.stats import WindowStats

    def window(rows):
        w = WindowStats(0.0, 60.0)
        w.update([{"timestamp": 1.0, "latency_ms": 1.0, "features": {"x": x, "y": y}} for x, y in rows])
        return w

    ref_rows = list(zip(ref_values.tolist(), (ref_values * 2).tolist(), strict=True))
    win_x = np.concatenate([ref_values[::2] + shift, extra])
    reference, win = window(ref_rows), window(list(zip(win_x.tolist(), (win_x - 1).tolist(), strict=True)))
    scores = {s["feature"]: s for s in ReferenceDriftRule(reference).scores(win, full=False)}
    for name in ("x", "y"):
        tr = reference.features.features[name].sketch.table()
        tw = win.features.features[name].sketch.table()
        grid = np.union1d(tr.values, tw.values)
        ks = float(np.max(np.abs(tr.cdf(grid) - tw.cdf(grid))))
        edges = tr.quantiles(DECILES)
        e = np.maximum(np.diff(np.concatenate([[0.0], tr.cdf(edges), [1.0]])), 1e-4)
        a = np.maximum(np.diff(np.concatenate([[0.0], tw.cdf(edges), [1.0]])), 1e-4)
        e, a = e / e.sum(), a / a.sum()
        n_eff = tr.count * tw.count / (tr.count + tw.count)
        got = scores[f"features.{name}"]
        assert got["ks"] == ks
        assert got["p_value"] == pytest.approx(float(special.kolmogorov(ks * np.sqrt(n_eff))) if ks else 1.0)
        assert got["psi"] == pytest.approx(float(np.sum((a - e) * np.log(a / e))), abs=1e-12)
        floor = float(special.chdtri(len(DECILES), NOISE_ALPHA)) * (1 / tr.count + 1 / tw.count)
        assert got["psi_floor"] == pytest.approx(max(0.1, floor))


output_value = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=False),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.just("yes"),
    st.lists(st.floats(0, 1), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(output_value, output_value), min_size=1, max_size=30))
def test_output_series_hold_each_numeric_value_with_its_time_and_leave_the_rest_out(outputs):
    """Confidence and prediction series: every event whose value is a number (not a bool), in order, as floats."""
    from stream.monitoring.monitor_file import MonitorConfig
    from stream.monitoring.signals import signal_series
    from stream.stats.columns import BatchColumns

    events = [
        {"timestamp": 100.0 + i, "latency_ms": 5.0, "confidence": c, "prediction": p}
        for i, (c, p) in enumerate(outputs)
    ]
    series = {
        name: (values, times)
        for name, values, times in signal_series(events, BatchColumns(events), MonitorConfig().for_model("m"), [])
    }
    for name in ("confidence", "prediction"):
        kept = [
            (float(e[name]), e["timestamp"])
            for e in events
            if isinstance(e[name], int | float) and not isinstance(e[name], bool)
        ]
        got = list(zip(*series[name], strict=True)) if name in series else []
        assert len(got) == len(kept)
        for (value, at), (want, want_at) in zip(got, kept, strict=True):
            assert at == want_at and (value == want or (np.isnan(value) and np.isnan(want)))


placed_events = st.lists(
    # Times on pane boundaries as well as between them.
    st.tuples(
        st.one_of(st.floats(0.0, 400.0, allow_nan=False), st.integers(0, 80).map(lambda k: k * 5.0)),
        feature_rows.map(lambda rows: rows[0]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(placed_events, placed_events, st.integers(1, 3))
def test_a_batch_is_placed_in_panes_as_an_event_by_event_placement_would(earlier, batch, max_features):
    """Panes of a batch placed at once (numpy, runs of the batch's columns) equal those of the plain loop below.

    The batch's events are out of order, span several panes, and some are late
    or too late against the watermark the earlier batch left.
    """
    import math

    from stream.stats import EventTimeWindows, WindowStats
    from stream.worker.state_codec import pack_state

    def events_of(drawn):
        return [
            {"timestamp": t, "latency_ms": t % 7, **({"features": row} if row is not None else {})} for t, row in drawn
        ]

    def place_one_by_one(w: EventTimeWindows, events: list[dict]) -> list[dict]:
        previous = w.watermark
        cutoff = -math.inf if previous is None else previous - w.lateness_s
        newest = max(e["timestamp"] for e in events)
        if previous is None or newest > previous:
            w.watermark = newest
        by_pane: dict[float, list[dict]] = {}
        placed = []
        for e in events:
            start = math.floor(e["timestamp"] / w.pane_s) * w.pane_s
            if start + w.pane_s <= cutoff:
                w.too_late += 1
                continue
            w.late += previous is not None and start + w.pane_s <= previous
            by_pane.setdefault(start, []).append(e)
            placed.append(e)
        for e in placed:
            for name in e.get("features") or {}:
                if name not in w.feature_names and name not in w.untracked_names:
                    if len(w.feature_names) < w.max_features:
                        w.feature_names[name] = None
                    else:
                        w.untracked_names.append(name)
                        w.untracked_features += 1
        for start, events_in_pane in by_pane.items():
            pane = w.panes.get(start)
            if pane is None:
                pane = w.panes[start] = WindowStats(start, start + w.pane_s, w.max_features, w.max_categories)
            pane.update(events_in_pane, w.feature_names, w.feature_kinds)
        w.events += len(placed)
        w._expire()
        return placed

    fast = EventTimeWindows(tumbling_s=60, hopping_s=120, hop_s=30, lateness_s=45, max_features=max_features)
    plain = EventTimeWindows(tumbling_s=60, hopping_s=120, hop_s=30, lateness_s=45, max_features=max_features)
    for drawn in (earlier, batch):
        events = events_of(drawn)
        assert fast.update(events) == place_one_by_one(plain, events)
    assert pack_state(fast.to_dict()) == pack_state(plain.to_dict())


percentile_values = hnp.arrays(
    np.float64,
    st.integers(0, 80),
    elements=st.one_of(finite, any_float, st.sampled_from([0.0, 1.0, 2.0, 2.5, 3.0])),
)


@settings(max_examples=500, deadline=None)
@given(percentile_values.filter(lambda a: a.size > 0), percentile_values)
def test_percentiles_equal_the_mean_of_numpys_left_and_right_ranks(reference, values):
    """One search where no value ties a reference value gives the mid-ranks of both searches, bit for bit."""
    reference = np.sort(reference)
    both = (np.searchsorted(reference, values, "left") + np.searchsorted(reference, values, "right")) / (
        2.0 * len(reference)
    )
    np.testing.assert_array_equal(percentiles(reference, values), both)


category_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, -0.0, 1.0, float("nan"), 2.5]),
    st.sampled_from(["a", "b", "1", "true", "x" * 130]),
    st.lists(st.integers(0, 1), max_size=1),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.lists(category_value, max_size=30), min_size=1, max_size=3),
    st.integers(1, 6),
)
def test_categories_counted_per_distinct_value_equal_those_counted_value_by_value(batches, max_categories):
    """Counts, the cap and the missing count as a loop over the values gives (True, 1 and 1.0; 0.0 and -0.0)."""
    from stream.stats.features import OTHER, CategoricalStats, category

    stats = CategoricalStats(max_categories)
    counts: dict[str, int] = {}
    missing = 0
    capped = False
    for values in batches:
        stats.update_many(values)
        for value in values:
            if value is None:
                missing += 1
                continue
            key = category(value)
            if key in counts or len(counts) - (OTHER in counts) < max_categories:
                counts[key] = counts.get(key, 0) + 1
            else:
                capped = True
                counts[OTHER] = counts.get(OTHER, 0) + 1
    assert list(stats.counts.items()) == list(counts.items())
    assert (stats.count, stats.missing, stats.distinct_capped) == (sum(map(len, batches)), missing, capped)


@settings(max_examples=300, deadline=None)
@given(sketch_values, hnp.arrays(np.float64, st.integers(0, 20), elements=st.one_of(finite, st.sampled_from([0.0]))))
def test_a_tables_cdf_is_the_share_of_its_values_counts_at_or_below(values, xs):
    """Read off the buckets one point at a time: below the first, on each, between, above the last."""
    from stream.stats.sketch import QuantileSketch

    sketch = QuantileSketch()
    sketch.update_many(values)
    table = sketch.table()
    counts = np.diff(table.running, prepend=0.0)
    points = np.concatenate([xs, table.values, table.values[:1] - 1.0, table.values[-1:] + 1.0])
    expected = [float(np.sum(counts[table.values <= x])) / sketch.count for x in points]
    assert table.cdf(points).tolist() == expected
    assert sketch.cdf(points).tolist() == expected


def test_an_empty_tables_cdf_is_zero_and_its_ks_distance_to_any_other_is_the_others_total_share():
    from stream.stats.paired_counts import PairedCounts
    from stream.stats.sketch import QuantileSketch

    empty, full = QuantileSketch(), QuantileSketch()
    full.update_many([1.0, 2.0])
    assert empty.table().cdf([-1.0, 0.0, 5.0]).tolist() == [0.0, 0.0, 0.0]
    assert PairedCounts([(empty, full), (full, empty), (empty, empty)]).ks_distances().tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="one relative accuracy"):
        PairedCounts([(full, QuantileSketch(relative_accuracy=0.05))])


@st.composite
def signal_batches(draw):
    """A few signals of different shapes, some shifting part way, fed in batches of random sizes."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(300, 4000))
    signals = []
    kinds = st.sampled_from(["lognormal", "integers", "scores", "normal", "flags"])
    for kind in draw(st.lists(kinds, min_size=2, max_size=6)):
        values = {
            "flags": lambda size: (rng.random(size) < 0.03).astype(float),
            "lognormal": lambda size: rng.lognormal(3, 1, size),
            "integers": lambda size: rng.poisson(2, size).astype(float),
            "scores": lambda size: np.round(rng.uniform(0, 1, size), 2),
            "normal": lambda size: rng.normal(0, 1, size),
        }[kind](n)
        if draw(st.booleans()):
            at = draw(st.integers(0, n - 1))
            values[at:] = values[at:] * draw(st.sampled_from([0.5, 1.5, 3.0])) + draw(st.sampled_from([0.0, 1.0]))
        signals.append(values)
    cuts = sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=12))))
    return signals, [0, *cuts, n]


def assert_together_as_alone(kind, rules, signals, bounds, gap):
    """Feeds ``signals`` in the batches ``bounds`` cut to ``rules()`` one by one and to ``kind.update_together``;
    the last signal misses values when ``gap`` is set (out of step). Same findings and states after each batch."""
    from stream.worker.state_codec import pack_state

    alone, together = rules(), rules()
    times = np.arange(bounds[-1], dtype=np.float64)
    for lo, hi in itertools.pairwise(bounds):
        series = []
        for i, values in enumerate(signals):
            keep = slice(lo, hi, 1 + gap) if i == len(signals) - 1 else slice(lo, hi)
            series.append((values[keep], times[keep]))
        expected = [rule.update(*s) for rule, s in zip(alone, series, strict=True)]
        assert kind.update_together(together, series) == expected
        for a, b in zip(alone, together, strict=True):
            assert pack_state(a.to_dict()) == pack_state(b.to_dict())


@settings(max_examples=60, deadline=None)
@given(
    signal_batches(),
    st.sampled_from([5, 10]),
    st.booleans(),
    st.sampled_from(["both", "up", "down"]),
    st.integers(0, 3),
)
def test_cusum_rules_updated_together_find_and_keep_what_each_updated_alone_does(case, block, spread, direction, gap):
    """Rules in step share their arrays; the findings and every state equal those of each rule fed on its own,
    bit for bit, including a signal with values missing (out of step) and rules that find changes."""
    from stream.detectors.cusum import PercentileCusumRule

    signals, bounds = case

    def rules():
        return [
            PercentileCusumRule(f"s{i}", warmup=20 * block, block=block, spread=spread or i % 2, direction=direction)
            for i in range(len(signals))
        ]

    assert_together_as_alone(PercentileCusumRule, rules, signals, bounds, gap)


@settings(max_examples=30, deadline=None)
@given(signal_batches(), st.integers(0, 2**32 - 1), st.sampled_from([5, 10]), st.integers(0, 3))
def test_cusum_rules_fed_a_few_blocks_at_a_time_step_together_as_each_alone(case, seed, block, gap):
    """Batches of a few blocks, as a model's signals come in small envelopes, are stepped together
    (not through running totals): the findings and states are still those of each rule alone, bit for bit."""
    from stream.detectors.cusum import MIN_BLOCKS_AT_ONCE, PercentileCusumRule

    signals, bounds = case
    sizes = np.random.default_rng(seed).integers(1, MIN_BLOCKS_AT_ONCE * block, size=len(signals[0]))
    bounds = sorted({0, *np.cumsum(sizes)[np.cumsum(sizes) < len(signals[0])].tolist(), len(signals[0])})

    def rules():
        return [PercentileCusumRule(f"s{i}", warmup=20 * block, block=block) for i in range(len(signals))]

    assert_together_as_alone(PercentileCusumRule, rules, signals, bounds, gap)


@settings(max_examples=60, deadline=None)
@given(
    signal_batches(),
    st.sampled_from([(20, 10), (6, 4)]),
    st.sampled_from(["both", "up", "down"]),
    st.sampled_from([3.0, 6.0]),
    st.integers(0, 3),
)
def test_level_shift_rules_updated_together_find_and_keep_what_each_updated_alone_does(
    case, windows, direction, threshold, gap
):
    """Rules at the same split points share their arrays; the findings and every state equal those of each rule
    fed on its own, bit for bit, including a signal with values missing (out of step) and rules that find shifts."""
    from stream.detectors.level_shift import LevelShiftRule

    signals, bounds = case
    before, after = windows

    def rules():
        return [
            LevelShiftRule(f"s{i}", before=before, after=after, threshold=threshold, direction=direction)
            for i in range(len(signals))
        ]

    assert_together_as_alone(LevelShiftRule, rules, signals, bounds, gap)


prediction_value = st.one_of(
    st.integers(0, 2), st.sampled_from(["cat", "dog", True, False, 1.0, 0.5, None, [0.2, 0.8]])
)
confidence_value = st.one_of(st.floats(0, 1), st.sampled_from([1, 0, True, None, "0.9"]))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(prediction_value, confidence_value, st.booleans()),
        min_size=1,
        max_size=400,
    ),
    st.integers(1, 399),
)
def test_estimated_performance_reads_the_batchs_columns_as_it_would_read_each_event(rows, cut):
    """Taken from the batch's columns (a run of them, as the monitor passes), CBPE counts exactly the events a
    plain reading keeps: a class prediction (a string, a boolean, a whole number) with a number for confidence."""
    from stream.detectors.cbpe import ConfidenceBasedPerformance
    from stream.stats.columns import BatchColumns
    from stream.worker.state_codec import pack_state

    events = []
    for i, (prediction, confidence, has_confidence) in enumerate(rows):
        event = {"timestamp": 1_000.0 + i, "prediction": prediction}
        if has_confidence:
            event["confidence"] = confidence
        events.append(event)

    def kept(e):
        c, p = e.get("confidence"), e["prediction"]
        number = isinstance(c, int | float) and not isinstance(c, bool)
        whole = isinstance(p, float) and p.is_integer()
        return number and (isinstance(p, bool | str | int) or whole)

    from_columns = ConfidenceBasedPerformance(chunk=20, check_every=10, reference_chunks=2)
    plain = ConfidenceBasedPerformance(chunk=20, check_every=10, reference_chunks=2)
    columns = BatchColumns(events)
    cut = min(cut, len(events))
    found = from_columns.update(events[:cut], columns.part(0, cut)) + from_columns.update(
        events[cut:], columns.part(cut, len(events))
    )

    def clean(part):
        return [{**e, "confidence": float(e["confidence"])} for e in part if kept(e)]

    assert found == plain.update(clean(events[:cut])) + plain.update(clean(events[cut:]))
    assert pack_state(from_columns.to_dict()) == pack_state(plain.to_dict())


@settings(max_examples=300, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 60)), elements=any_float),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.floats(-1e9, 1e9),
)
def test_smoothing_equals_scipys_lfilter_bit_for_bit(x, gain, keep, start):
    # The compiled routine behind lfilter, loaded without scipy.signal (see lean_imports).
    from scipy import signal

    from stream.detectors.lean_imports import smooth

    carry = np.full((x.shape[0], 1), start)
    expected = signal.lfilter([gain], [1.0, -keep], x, axis=-1, zi=carry)[0]
    assert np.array_equal(smooth(gain, keep, x, carry), expected, equal_nan=True)
    assert np.array_equal(smooth(gain, keep, x[0], carry[0]), expected[0], equal_nan=True)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 60), st.one_of(st.just(0.0), st.floats(1e-6, 2.0)))
def test_quality_binomial_tail_is_scipy_stats_binom_sf(n, k, p):
    # scipy.special's tail instead of scipy.stats' (see lean_imports): the same decisions.
    from scipy import stats

    from stream.detectors.quality import DataQualityRule

    tail = float(stats.binom.sf(k - 1, n, min(p, 1.0)))
    assume(tail == 0.0 or tail > 1e-250)  # the two agree to about 1e-11, not in the subnormals
    rule = DataQualityRule.__new__(DataQualityRule)
    # Just above and just below the tail itself: the rule's answer flips between the two.
    rule.alpha = np.nextafter(tail, 2.0) * (1 + 1e-9)
    assert rule._improbable(k, n, p)
    rule.alpha = tail * (1 - 1e-9)
    assert not rule._improbable(k, n, p)

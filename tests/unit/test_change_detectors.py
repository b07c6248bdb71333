"""The default change detectors (level_shift, cusum): quiet on non-Gaussian stationary data,
fast on real changes, placed where the change began, indifferent to batching, plain state.

The false-alarm figures behind the defaults come from ``python -m bench.detection``;
here each stream is long enough that a rate ten times the stated one would show.
"""

import numpy as np
import pytest

from stream.detectors import SignalDetector
from stream.detectors.cusum import PercentileCusumRule
from stream.detectors.level_shift import LevelShiftRule
from stream.detectors.two_sided_cusum import TwoSidedCusum
from stream.worker.state_codec import pack_state, unpack_state

RULES = {"level_shift": LevelShiftRule, "cusum": PercentileCusumRule}


def feed(rule, values, batch=100, rate=100.0):
    times = np.arange(len(values)) / rate
    found = []
    for i in range(0, len(values), batch):
        found += rule.update(values[i : i + batch].tolist(), times[i : i + batch].tolist())
    return found


def stationary_streams(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "lognormal": rng.lognormal(3.0, 1.2, n),
        "small integers": rng.integers(1, 5, n).astype(float),
        "mostly zero": (rng.uniform(size=n) < 0.03).astype(float),
        "student t (2 dof)": rng.standard_t(2, n),
        "poisson": rng.poisson(3.0, n).astype(float),
        "scores in [0, 1]": rng.beta(8, 2, n),
        "constant": np.full(n, 7.0),
        "daily cycle": np.sin(np.arange(n) * 2 * np.pi / 8_640_000) * 0.5 + rng.normal(size=n),
    }


@pytest.mark.parametrize("name", list(RULES))
def test_no_false_alarm_on_non_gaussian_stationary_streams(name):
    # 8 streams x 100,000 values: at the stated rate (under 1 per 100,000) an alarm here is a regression.
    for stream, values in stationary_streams(100_000, seed=11).items():
        assert feed(RULES[name]("x"), values) == [], f"{name} on {stream}"


def test_level_shift_places_a_jump_on_its_event_and_alerts_once():
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.lognormal(3.0, 1.0, 3000), rng.lognormal(11.0, 1.0, 3000)])  # 8 sd in logs
    found = feed(LevelShiftRule("x"), values)
    assert len(found) == 1
    assert abs(found[0].evidence["change_started_at"] * 100 - 3000) <= 2
    assert found[0].evidence["after"] > found[0].evidence["before"]
    assert found[0].evidence["log_scale"] is True  # positive and skewed: compared on a log scale


def test_level_shift_ignores_a_steady_trend():
    rng = np.random.default_rng(3)
    values = np.linspace(0, 50, 20_000) + rng.normal(0, 1, 20_000)
    assert feed(LevelShiftRule("x"), values) == []


def test_cusum_catches_one_sd_within_a_hundred_events_and_a_variance_change():
    rng = np.random.default_rng(4)
    values = np.concatenate([rng.normal(0, 1, 5000), rng.normal(1, 1, 1000)])
    found = feed(PercentileCusumRule("x"), values, batch=10)
    assert found and found[0].evidence["direction"] == "up"
    assert found[0].event_time * 100 - 5000 < 150
    assert abs(found[0].evidence["change_started_at"] * 100 - 5000) <= 20
    wider = np.concatenate([rng.normal(0, 1, 5000), rng.normal(0, 2.5, 2000)])
    found = feed(PercentileCusumRule("x"), wider, batch=10)
    assert [(f.evidence["statistic"], f.evidence["direction"]) for f in found[:1]] == [("spread", "wider")]


def test_cusum_direction_up_ignores_a_fall():
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(0, 1, 3000), rng.normal(-2, 1, 1000)])
    assert feed(PercentileCusumRule("x", direction="up", spread=False), values) == []


@pytest.mark.parametrize("name", list(RULES))
def test_same_findings_whatever_the_batching(name):
    rng = np.random.default_rng(6)
    values = np.concatenate([rng.normal(0, 1, 2000), rng.normal(8, 1, 500), rng.normal(3, 3, 1500)])
    runs = [
        [(f.event_time, f.evidence["change_started_at"]) for f in feed(RULES[name]("x"), values, b)]
        for b in (1, 7, 100, 4000)
    ]
    assert runs[0], name
    assert all(run == runs[0] for run in runs), name


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limit", [0.8, 100.0])
def test_cusum_blocks_taken_at_once_leave_the_state_block_by_block_steps_leave(seed, limit):
    rng = np.random.default_rng(seed)
    means, starts = rng.beta(2, 2, 300), np.arange(300.0)
    at_once = TwoSidedCusum(center=0.5, sd=0.1, allowance=0.02, limit=limit)
    for k in range(5):  # start from sums away from zero, as a batch after the first does
        at_once.step(float(means[k]), starts[k])
    one_by_one = TwoSidedCusum.from_dict(at_once.to_dict())
    sums = at_once.sums_after(means[5:])
    quiet = at_once.quiet_blocks(sums)
    at_once.take(means[5:], starts[5:], sums, quiet)
    taken = zip(means[5 : 5 + quiet].tolist(), starts[5 : 5 + quiet].tolist(), strict=True)
    assert [one_by_one.step(m, t) for m, t in taken] == [None] * quiet
    if 5 + quiet < len(means):  # the block left out is the one that crosses
        assert TwoSidedCusum.from_dict(one_by_one.to_dict()).step(float(means[5 + quiet]), 0.0) is not None
    a, b = at_once.to_dict(), one_by_one.to_dict()
    assert (a["start"], a["blocks"]) == (b["start"], b["blocks"])
    assert a["sums"] == pytest.approx(b["sums"], abs=1e-9) and a["total"] == pytest.approx(b["total"], abs=1e-9)
    assert (quiet < 295) == (limit < 1)  # both ways are exercised


@pytest.mark.parametrize("batch", [1, 17, 199, 200, 201, 1000])
def test_cusum_keeps_the_last_warmup_values_for_its_next_baseline_whatever_the_batching(batch):
    values = np.random.default_rng(9).lognormal(0, 1, 1000)
    rule = PercentileCusumRule("x", warmup=200)
    assert feed(rule, values, batch) == []
    times = np.arange(len(values)) / 100.0
    assert rule.to_dict()["recent"].tolist() == [
        [x, t] for x, t in zip(values[-200:].tolist(), times[-200:].tolist(), strict=True)
    ]


@pytest.mark.parametrize("name", list(RULES))
def test_state_is_plain_data_and_a_restored_rule_goes_on_identically(name):
    rng = np.random.default_rng(7)
    head, tail = rng.normal(0, 1, 1500), np.concatenate([rng.normal(0, 1, 500), rng.normal(10, 1, 500)])
    rule = RULES[name]("x")
    assert isinstance(rule, SignalDetector)
    feed(rule, head)
    state = unpack_state(pack_state(rule.to_dict()))  # refuses anything but plain data
    clone = RULES[name]("x")
    clone.load_state(state)
    times = (np.arange(len(tail)) + len(head)) / 100.0
    a = rule.update(tail.tolist(), times.tolist())
    b = clone.update(tail.tolist(), times.tolist())
    assert a and [f.event_time for f in a] == [f.event_time for f in b]


@pytest.mark.parametrize("name", list(RULES))
def test_a_state_of_another_version_is_refused(name):
    state = RULES[name]("x").to_dict()
    state["state_version"] = 99
    with pytest.raises(ValueError, match="state version"):
        RULES[name]("x").load_state(state)


@pytest.mark.parametrize("name", list(RULES))
def test_state_stays_small_on_a_long_stream(name):
    # A model's state is one changelog record: it must not grow with the stream.
    rule = RULES[name]("x")
    feed(rule, np.random.default_rng(8).normal(0, 1, 50_000))
    assert len(pack_state(rule.to_dict())) < 20_000

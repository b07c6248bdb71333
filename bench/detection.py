"""Detection quality: ``python -m bench.detection [--part tcpd,stationary,injected,synthetic] [--reps 10] [--json]``.

Four parts, all with the default configuration:

- ``tcpd``: F1 on the six real series with annotated change points that river
  ships (see ``bench/tcpd.py``), beside reporting no change and the paper's
  best default method per series;
- ``stationary``: firing alerts of a whole default model monitor on
  realistic stationary traffic (``bench/realistic.py``), per detector and
  signal, over ``--events`` events per seed;
- ``injected``: events (and 60 s windows) from a realistic injected change
  to the first alert, and runs that missed it;
- ``synthetic``: the table below.

The synthetic part replays streams with known change points through single
detectors, with their default settings, and prints per scenario and detector:

- ``delay_median`` / ``delay_max``: events from the change to the first finding;
- ``missed``: runs without a finding within ``HORIZON`` events of the change;
- ``fa_per_10k``: findings before the change, per 10,000 stationary events;
- ``onset_error``: median of (estimated change start - true change), in events,
  where the detector estimates it (``evidence.change_started_at``).

Events arrive at 100 per second, so a 60 s tumbling window holds 6,000.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from river.datasets import synth

from bench import monitored, tcpd
from stream.detectors.cusum import PercentileCusumRule
from stream.detectors.iqr import IQRRule
from stream.detectors.level_shift import LevelShiftRule
from stream.detectors.multivariate import MahalanobisRule
from stream.detectors.performance import PerformanceRule
from stream.detectors.reference_drift import ReferenceDriftRule
from stream.detectors.stream_drift import StreamDriftRule
from stream.detectors.zscore import ZScoreRule
from stream.stats import WindowStats

RATE = 100.0
CHANGE = 20_000
HORIZON = 3_000
BATCH = 100  # events per update, as an SDK envelope delivers them


@dataclass
class Scenario:
    """A stream with a change at ``CHANGE`` (or none), and the detectors that should see it."""

    name: str
    make: Callable[[np.random.Generator, int], np.ndarray]
    detectors: tuple[str, ...]
    length: int = CHANGE + HORIZON
    change: int | None = CHANGE


def _shift(mean: float, sd: float = 1.0, ramp: int = 0):
    def make(rng: np.random.Generator, n: int) -> np.ndarray:
        x = rng.normal(0, 1, n)
        after = np.arange(n) >= CHANGE
        if ramp:
            frac = np.clip((np.arange(n) - CHANGE) / ramp, 0, 1)
            return x * np.where(after, sd, 1.0) + mean * frac
        return np.where(after, x * sd + mean, x)

    return make


def _latency_spike(rng: np.random.Generator, n: int) -> np.ndarray:
    x = 12.0 * np.exp(rng.normal(0, 0.25, n))
    spike = (np.arange(n) >= CHANGE) & (np.arange(n) < CHANGE + 300)
    return np.where(spike, x * 8, x)


def _errors(rng: np.random.Generator, n: int) -> np.ndarray:
    p = np.where(np.arange(n) >= CHANGE, 0.05, 0.005)
    return (rng.uniform(0, 1, n) < p).astype(float)


def _categories(rng: np.random.Generator, n: int) -> np.ndarray:
    before = rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])
    after = rng.choice(4, n, p=[0.2, 0.3, 0.2, 0.3])
    return np.where(np.arange(n) >= CHANGE, after, before).astype(float)


def _concept(rng: np.random.Generator, n: int) -> np.ndarray:
    # SEA concepts: a fixed model of concept 0 judged against labels that switch
    # to concept 2 at the change, with 10 % label noise throughout.
    before = synth.SEA(variant=0, noise=0.1, seed=int(rng.integers(1 << 30))).take(CHANGE)
    after = synth.SEA(variant=2, noise=0.1, seed=int(rng.integers(1 << 30))).take(max(n - CHANGE, 0))
    errors = np.empty(n)
    for i, (x, y) in enumerate(itertools.chain(before, after)):
        errors[i] = float((x[0] + x[1] > 8) != y)
    return errors


def _correlated(broken: bool):
    def make(rng: np.random.Generator, n: int) -> np.ndarray:
        # Two features that move together (r = 0.8); when broken they move against
        # each other from the change on, each keeping its own distribution.
        xs = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.8], [0.8, 1.0]], n)
        if broken:
            after = np.arange(n) >= CHANGE
            xs[after, 1] = -xs[after, 0] * 0.8 + rng.normal(0, 0.6, int(after.sum()))
        return xs

    return make


NUMERIC = ("level_shift", "cusum", "adwin", "page_hinkley", "kswin", "reference_drift")
SCENARIOS = [
    Scenario(
        "stationary (long)",
        _shift(0.0),
        ("level_shift", "cusum", "adwin", "page_hinkley", "reference_drift", "zscore", "iqr"),
        length=200_000,
        change=None,
    ),
    Scenario("abrupt mean +1 sd", _shift(1.0), NUMERIC),
    Scenario("abrupt mean +2 sd", _shift(2.0), NUMERIC),
    Scenario("gradual mean +1 sd over 2000", _shift(1.0, ramp=2000), NUMERIC),
    Scenario("variance x2", _shift(0.0, sd=2.0), NUMERIC),
    Scenario("category mix change", _categories, ("reference_drift_categorical",)),
    Scenario("latency spike x8 (300 events)", _latency_spike, ("zscore", "iqr")),
    Scenario("error rate 0.5% -> 5%", _errors, ("adwin_errors",)),
    Scenario("concept drift (SEA, 10% label noise)", _concept, ("ddm",)),
    Scenario("stationary correlated pair (long)", _correlated(False), ("mahalanobis",), length=200_000, change=None),
    Scenario("correlation broken (r 0.8 -> -0.8)", _correlated(True), ("mahalanobis",)),
]


def _times(n: int) -> list[float]:
    return [i / RATE for i in range(n)]


def _first_finding_events(findings: Iterable, change: int | None) -> tuple[list[int], int | None, int | None]:
    """Finding positions (in events), the first after the change, and its onset estimate."""
    positions = [round(f.event_time * RATE) for f in findings]
    onset = None
    first_after = None
    if change is not None:
        for f, pos in zip(findings, positions, strict=True):
            if pos >= change:
                first_after = pos
                started = f.evidence.get("change_started_at")
                if started is not None:
                    onset = round(started * RATE) - change
                break
    return positions, first_after, onset


def _stream_rule(rule, values: np.ndarray) -> list:
    times = _times(len(values))
    found = []
    for i in range(0, len(values), BATCH):
        found += rule.update(values[i : i + BATCH].tolist(), times[i : i + BATCH])
    return found


def _reference_drift(values: np.ndarray, categorical: bool) -> list:
    def event(i: int) -> dict:
        v = values[i]
        feature = f"c{int(v)}" if categorical else float(v)
        return {"timestamp": i / RATE, "latency_ms": 1.0, "features": {"x": feature}}

    reference = WindowStats(0, 1)
    reference.update([event(i) for i in range(1000)])
    rule = ReferenceDriftRule(reference)
    found = []
    window = None
    for start in range(1000, len(values), BATCH):
        batch = [event(i) for i in range(start, min(start + BATCH, len(values)))]
        w_start = math.floor(batch[0]["timestamp"] / 60) * 60
        if window is None or window.start != w_start:
            window = WindowStats(w_start, w_start + 60)
        window.update(batch)
        found += rule.check(window, batch[-1]["timestamp"])
    return found


def _mahalanobis(values: np.ndarray) -> list:
    rule = MahalanobisRule(["a", "b"])
    found = []
    for start in range(0, len(values), BATCH):
        rows = values[start : start + BATCH]
        batch = [
            {"timestamp": (start + i) / RATE, "features": {"a": float(a), "b": float(b)}}
            for i, (a, b) in enumerate(rows)
        ]
        found += rule.update(batch)
    return found


def _ddm(values: np.ndarray) -> list:
    perf = PerformanceRule(window=500, reference_labels=1000)
    found = []
    for i, wrong in enumerate(values):
        found += [f for f in perf.update(1, 0 if wrong else 1, i / RATE) if f.detector == "ddm"]
    return found


def run_detector(name: str, values: np.ndarray) -> list:
    """Findings of detector ``name`` (default settings) on ``values``."""
    if name == "level_shift":
        return _stream_rule(LevelShiftRule("x"), values)
    if name == "cusum":
        return _stream_rule(PercentileCusumRule("x"), values)
    if name in ("adwin", "page_hinkley", "kswin"):
        return _stream_rule(StreamDriftRule("x", name), values)
    if name == "adwin_errors":
        return _stream_rule(StreamDriftRule("error_rate", "adwin", direction="up"), values)
    if name == "zscore":
        log = values.min() > 0
        return _stream_rule(ZScoreRule("x", log_scale=log), values)
    if name == "iqr":
        return _stream_rule(IQRRule("x"), values)
    if name == "reference_drift":
        return _reference_drift(values, categorical=False)
    if name == "reference_drift_categorical":
        return _reference_drift(values, categorical=True)
    if name == "ddm":
        return _ddm(values)
    if name == "mahalanobis":
        return _mahalanobis(values)
    raise KeyError(name)


def evaluate(scenario: Scenario, detector: str, reps: int, seed: int = 0) -> dict:
    """Aggregate figures of ``detector`` on ``reps`` runs of ``scenario``."""
    delays, onsets = [], []
    missed = false_alarms = stationary = 0
    for rep in range(reps):
        rng = np.random.default_rng(seed + rep)
        values = scenario.make(rng, scenario.length)
        if scenario.name.startswith("stationary") and detector == "zscore":
            values = 12.0 * np.exp(0.25 * values)  # latency-like
        findings = run_detector(detector, values)
        positions, first_after, onset = _first_finding_events(findings, scenario.change)
        end = scenario.change if scenario.change is not None else scenario.length
        false_alarms += sum(1 for p in positions if p < end)
        stationary += end
        if scenario.change is not None:
            if first_after is None or first_after - scenario.change > HORIZON:
                missed += 1
            else:
                delays.append(first_after - scenario.change)
                if onset is not None:
                    onsets.append(onset)
    return {
        "scenario": scenario.name,
        "detector": detector,
        "runs": reps,
        "delay_median": statistics.median(delays) if delays else None,
        "delay_max": max(delays) if delays else None,
        "missed": missed if scenario.change is not None else None,
        "fa_per_10k": round(false_alarms / stationary * 10_000, 3),
        "onset_error": statistics.median(onsets) if onsets else None,
    }


def _table(title: str, rows: list[dict]) -> Table:
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(column, justify="right" if isinstance(rows[0][column], (int, float)) else "left")
    for row in rows:
        table.add_row(*("-" if v is None else ", ".join(v) if isinstance(v, list) else str(v) for v in row.values()))
    return table


def synthetic(reps: int) -> list[dict]:
    """The synthetic scenarios, per detector."""
    jobs = [(s, d) for s in SCENARIOS for d in s.detectors]
    rows = []
    with Progress(transient=True) as progress:
        task = progress.add_task("scenarios", total=len(jobs))
        for scenario, detector in jobs:
            n = max(1, reps // 3) if detector == "kswin" else reps
            if scenario.change is None:
                n = max(1, reps // 5)
            progress.update(task, description=f"{scenario.name}: {detector}")
            rows.append(evaluate(scenario, detector, n))
            progress.advance(task)
    return rows


def stationary(events: int, seeds: int) -> list[dict]:
    """Firing alerts of a default monitor on realistic stationary traffic, per seed."""
    rows = []
    for seed in range(seeds):
        counts = monitored.stationary(events, seed)
        rows.append(
            {
                "seed": seed,
                "events": events,
                "alerts": sum(counts.values()),
                "per_100k": round(sum(counts.values()) / events * 100_000, 2),
                "by_detector": [f"{k}: {v}" for k, v in sorted(counts.items())],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="tcpd,stationary,injected,synthetic", help="comma-separated parts to run")
    parser.add_argument("--reps", type=int, default=10, help="runs per synthetic scenario (KSWIN a third as many)")
    parser.add_argument("--events", type=int, default=400_000, help="events per stationary run")
    parser.add_argument("--seeds", type=int, default=3, help="stationary runs (seeds); injected runs per change")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    parts = [p.strip() for p in args.part.split(",") if p.strip()]
    unknown = set(parts) - {"tcpd", "stationary", "injected", "synthetic"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    console = Console(width=max(Console().width, 160))
    out: dict[str, list[dict]] = {}
    for part in parts:
        started = time.perf_counter()
        if part == "tcpd":
            rows = tcpd.evaluate()
            mean = {k: round(statistics.mean(r[k] for r in rows), 3) for k in ("f1", "f1_no_change")}
            best = round(statistics.mean(r["f1_paper_best_default"] for r in rows), 3)
            rows.append({**{k: "" for k in rows[0]}, "series": "mean", **mean, "f1_paper_best_default": best})
        elif part == "stationary":
            rows = stationary(args.events, args.seeds)
        elif part == "injected":
            rows = monitored.injected(args.seeds)
        else:
            rows = synthetic(args.reps)
        out[part] = rows
        if not args.json:
            console.print(_table(f"{part} ({time.perf_counter() - started:.0f} s)", rows))
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Data quality against a reference profile: missing-rate jumps, unseen
categories, out-of-range numbers and wrong types, per feature and window.

Each check fires at most once per feature per tumbling window, and windows
are checked at fixed counts (``min_events``, then every quarter of growth),
so a replay in other batches decides alike. The
reference is a sample too, so rates are judged against what it allows, not
what it happened to show: a missing-rate jump must exceed the reference rate
by an absolute margin *and* be improbable (binomial tail below ``alpha``)
under the reference rate's upper confidence bound; unseen categories must be
improbable under the Good-Turing estimate of the reference's missing mass
(the share of traffic in categories a sample of its size misses: categories
seen once, over its size), so rare categories a 1,000-event reference never
met are not "new". ``alpha`` is small because a window is checked as it
grows.

References: I. J. Good, "The population frequencies of species and the
estimation of population parameters", Biometrika 40 (1953).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

from stream.detectors.base import Finding, WindowCheckpoints, check_state_version, tumbling_window
from stream.detectors.quality_counts import FeatureCounts, LaterEvents, WindowAt
from stream.stats import CategoricalStats, NumericStats, WindowStats
from stream.stats.columns import BatchColumns
from stream.stats.features import OTHER

# The layout of to_dict; a state without a version has this layout too (see check_state_version).
STATE_VERSION = 1


class DataQualityRule:
    """Compares each window's features with a reference window.

    >>> from stream.stats import WindowStats
    >>> ref = WindowStats(0, 1)
    >>> ref.update([{"timestamp": 0, "latency_ms": 1, "features": {"c": "DE"}}] * 200)
    >>> rule = DataQualityRule(ref, min_events=20)
    >>> win = WindowStats(0, 60)
    >>> batch = [{"timestamp": 1, "latency_ms": 1, "features": {"c": "XX"}}] * 30
    >>> win.update(batch)
    >>> [f.detector for f in rule.update(batch, win)]
    ['unseen_category']
    """

    name = "data_quality"

    def __init__(
        self,
        reference: WindowStats,
        *,
        min_events: int = 50,
        missing_margin: float = 0.05,
        z: float = 4.0,
        min_unseen_share: float = 0.01,
        min_unseen: int = 5,
        min_out_of_range_share: float = 0.01,
        min_out_of_range: int = 5,
        range_tolerance: float = 0.1,
        window_s: float = 60.0,
        alpha: float = 1e-6,
    ) -> None:
        self.reference = reference
        self.min_events = min_events
        self.missing_margin = missing_margin
        self.z = z
        self.min_unseen_share = min_unseen_share
        self.min_unseen = min_unseen
        self.min_out_of_range_share = min_out_of_range_share
        self.min_out_of_range = min_out_of_range
        self.range_tolerance = range_tolerance
        self.window_s = window_s
        self.alpha = alpha
        self.out_of_range: dict[str, list[int]] = {}  # feature -> [low, high] counts this window
        self.fired: set[str] = set()
        self.checkpoints = WindowCheckpoints(min_events)
        self._ranges = self._reference_ranges()
        # The same ranges as a column of lows and one of highs, for every batch's comparisons.
        self._bounds = np.array(list(self._ranges.values())).reshape(-1, 2)

    def _reference_ranges(self) -> dict[str, tuple[float, float]]:
        ranges = {}
        for name, stats in self.reference.features.features.items():
            if isinstance(stats, NumericStats) and stats.moments.count:
                lo, hi = stats.moments.min, stats.moments.max
                pad = (hi - lo) * self.range_tolerance
                ranges[name] = (lo - pad, hi + pad)
        return ranges

    def update(
        self,
        events: list[dict[str, Any]],
        window: WindowStats,
        columns: BatchColumns | None = None,
    ) -> list[Finding]:
        """Check ``window`` (the current tumbling window, which holds ``events`` already) at each test count they pass.

        A test due at count c sees the window as it stood at c: the counts of
        the events after c are taken off again. So the tests fall at the same
        counts however the events were batched, and the caller need not end
        its batches at them (see :meth:`events_until_test`). ``columns`` are
        the events' feature values when the caller has them already.
        """
        if self.checkpoints.new_window(window.start):
            self.out_of_range = {}
            self.fired = set()
        stamps = np.fromiter((e["timestamp"] for e in events), np.float64, len(events))
        # Late events of earlier windows are in the batch too; only this window's are counted here.
        inside = np.flatnonzero((stamps >= window.start) & (stamps < window.end))
        before = window.count - inside.size
        columns = columns or BatchColumns(events)
        findings: list[Finding] = []
        count = before
        ranges: dict[str, np.ndarray] | None = None
        while (due := count + self.checkpoints.events_until_due(window.start, count)) <= window.count:
            self.checkpoints.reached(window.start, due)
            if ranges is None:
                ranges = self._cumulative_out_of_range(columns, inside)
            taken = due - before
            event_time = float(stamps[: inside[taken - 1] + 1].max()) if taken > 0 else window.last_event_time or 0.0
            later = LaterEvents(inside[taken:], events, columns)
            out_of_range = self._out_of_range_at(ranges, taken)
            findings += self._check(window, due, self._features_at(window, later), out_of_range, event_time)
            count = due
        if ranges is None:
            ranges = self._cumulative_out_of_range(columns, inside, totals_only=True)
        self.out_of_range = self._out_of_range_at(ranges, -1)
        return findings

    def _cumulative_out_of_range(
        self, columns: BatchColumns, inside: np.ndarray, totals_only: bool = False
    ) -> dict[str, np.ndarray]:
        """Out-of-range values among the first k of the batch's events in this window, ``[k] = [below, above]``.

        ``totals_only``: only for all of them (the last row), which most batches need.
        """
        if not self._ranges:
            return {}
        names = self._ranges.keys()
        # All the features' columns in one array: a few numpy calls for the lot, not per feature.
        values = np.stack([columns.get(name) for name in names])
        if inside.size != len(columns):
            values = values[:, inside]
        low, high = values < self._bounds[:, :1], values > self._bounds[:, 1:]  # NaN counts as neither
        if totals_only:
            below, above = np.count_nonzero(low, axis=1).tolist(), np.count_nonzero(high, axis=1).tolist()
            totals = zip(names, below, above, strict=True)
            return {name: np.array([[0, 0], [lo, hi]]) for name, lo, hi in totals if lo or hi}
        cumulative = np.zeros((len(self._ranges), values.shape[1] + 1, 2), dtype=np.int64)
        np.cumsum(low, axis=1, out=cumulative[:, 1:, 0])
        np.cumsum(high, axis=1, out=cumulative[:, 1:, 1])
        return {name: cumulative[i] for i, name in enumerate(names) if cumulative[i, -1].any()}

    def _out_of_range_at(self, ranges: dict[str, np.ndarray], taken: int) -> dict[str, list[int]]:
        """This window's out-of-range counts once the first ``taken`` of the batch's events in it are counted.

        ``taken`` -1: all of them.
        """
        out = {name: list(counts) for name, counts in self.out_of_range.items()}
        for name, cumulative in ranges.items():
            below, above = cumulative[taken].tolist()
            if below or above:
                counts = out.setdefault(name, [0, 0])
                counts[0] += below
                counts[1] += above
        return out

    def _features_at(self, window: WindowStats, later: LaterEvents) -> dict[str, FeatureCounts]:
        """Each feature's counts in ``window`` without the ``later`` events (the last it took in).

        Exact when the window is one pane (``hop_s`` equal to ``window_s``, the
        default). With several panes, a pane that never held a feature did not
        count its events as missing it, and taking them off again undercounts it.
        """
        out = {}
        for name, stats in window.features.features.items():
            counts = FeatureCounts.of(stats)
            counts.take_off(later, name)
            if counts.count > 0:
                out[name] = counts
        return out

    def _check(
        self,
        window: WindowStats,
        count: int,
        features: dict[str, FeatureCounts],
        out_of_range: dict[str, list[int]],
        event_time: float,
    ) -> list[Finding]:
        """Every check of the window as it stood at ``count`` events."""
        at = WindowAt(window.start, count)
        findings: list[Finding] = []
        for name, stats in features.items():
            ref = self.reference.features.features.get(name)
            if ref is None:
                continue
            for finding in (
                self._wrong_type(name, stats, ref, at, event_time),
                self._missing(name, stats, ref, at, event_time),
                self._unseen(name, stats, ref, at, event_time),
                self._range(name, stats, out_of_range.get(name), at, event_time),
            ):
                if finding is not None:
                    findings.append(finding)
        # Features the reference has and the window lacks entirely are 100 % missing.
        for name, ref in self.reference.features.features.items():
            if name not in features and count >= self.min_events:
                absent = FeatureCounts(isinstance(ref, NumericStats), count=count, missing=count)
                finding = self._missing(name, absent, ref, at, event_time)
                if finding is not None:
                    findings.append(finding)
        return findings

    def check_window(
        self, window: WindowStats, events: list[dict[str, Any]], columns: BatchColumns, event_time: float
    ) -> list[Finding]:
        """Check the window at each test count the new events passed (see :class:`WindowDetector`)."""
        return self.update(events, window, columns)

    def events_until_test(self, window_start: float, count: int) -> int | None:
        """None: this rule tests at its counts inside any batch (see :meth:`update`), so batches need no end there."""
        return None

    def _improbable(self, k: int, n: int, p: float) -> bool:
        """Whether ``k`` or more of ``n`` is below ``alpha`` likely when each has probability ``p``."""
        # P(X >= k) for a binomial X: scipy.special's, since importing scipy.stats grows every worker (lean_imports).
        tail = special.bdtrc(k - 1, n, min(p, 1.0)) if k <= n else 0.0  # bdtrc is NaN past n
        return bool(tail < self.alpha)

    def _once(self, key: str) -> bool:
        if key in self.fired:
            return False
        self.fired.add(key)
        return True

    def _missing(self, name, stats, ref, window, event_time) -> Finding | None:
        n = stats.count
        if n < self.min_events or not ref.count:
            return None
        p0 = ref.missing / ref.count
        p = stats.missing / n
        threshold = p0 + self.missing_margin
        if p < threshold or not self._improbable(stats.missing, n, _upper(p0, ref.count, self.z)):
            return None
        if not self._once(f"missing:{name}"):
            return None
        severity = "critical" if p >= 0.5 else "warning"
        return _finding(
            name,
            "missing_rate",
            severity,
            p,
            threshold,
            {"missing_rate": p0, "count": ref.count},
            f"feature {name!r} is missing in {p:.1%} of {n} events this window "
            f"(normally {p0:.1%}, over {ref.count} reference events; alert above {threshold:.1%}).",
            window,
            self.window_s,
            event_time,
            {"missing": stats.missing, "observed_rate": p, "baseline_rate": p0},
            where_to_look="Look at the producer of this input: a failing upstream lookup or a renamed field.",
        )

    def _unseen(self, name, stats, ref, window, event_time) -> Finding | None:
        if stats.numeric or not isinstance(ref, CategoricalStats):
            return None
        if ref.distinct_capped:
            return None  # the reference does not know all its categories
        unseen = {k: v for k, v in stats.counts.items() if k not in ref.counts and k != OTHER}
        total = sum(unseen.values())
        present = stats.count - stats.missing
        if not present or total < self.min_unseen:
            return None
        share = total / present
        singletons = sum(1 for k, v in ref.counts.items() if v == 1 and k != OTHER)
        ref_present = max(ref.count - ref.missing, 1)
        missing_mass = _upper((singletons + 1) / ref_present, ref_present, self.z)
        if share < self.min_unseen_share or not self._improbable(total, present, missing_mass):
            return None
        if not self._once(f"unseen:{name}"):
            return None
        top = sorted(unseen.items(), key=lambda kv: -kv[1])[:5]
        return _finding(
            name,
            "unseen_category",
            "critical" if share >= 0.1 else "warning",
            share,
            self.min_unseen_share,
            {"categories": len(ref.counts), "count": ref.count, "expected_unseen_rate": round(missing_mass, 6)},
            f"feature {name!r} has {len(unseen)} categor{'y' if len(unseen) == 1 else 'ies'} never seen in the "
            f"reference in {share:.1%} of {present} values this window "
            f"(most frequent: {', '.join(repr(k) for k, _ in top)}; normally under {missing_mass:.2%} of values "
            "are new). A new value upstream, a changed encoding, or a profile that needs building again.",
            window,
            self.window_s,
            event_time,
            {
                "unseen": [{"value": k, "count": v} for k, v in top],
                "observed_rate": share,
                "baseline_rate": round(missing_mass, 6),
            },
        )

    def _range(self, name, stats, counts, window, event_time) -> Finding | None:
        if not counts or not stats.numeric:
            return None
        total = counts[0] + counts[1]
        present = stats.count - stats.missing - stats.wrong_type
        if not present or total < self.min_out_of_range:
            return None
        share = total / present
        if share < self.min_out_of_range_share or not self._once(f"range:{name}"):
            return None
        lo, hi = self._ranges[name]
        ref = self.reference.features.features[name]
        return _finding(
            name,
            "out_of_range",
            "critical" if share >= 0.1 else "warning",
            share,
            self.min_out_of_range_share,
            {"min": ref.moments.min, "max": ref.moments.max, "allowed_low": lo, "allowed_high": hi},
            f"feature {name!r} is outside the reference range [{lo:g}, {hi:g}] in {share:.1%} "
            f"of {present} values this window ({counts[0]} below, {counts[1]} above); normally none. "
            "A unit or scaling change upstream, or inputs the model never saw in training.",
            window,
            self.window_s,
            event_time,
            {"below": counts[0], "above": counts[1], "observed_rate": share, "baseline_rate": 0.0},
        )

    def _wrong_type(self, name, stats, ref, window, event_time) -> Finding | None:
        if not stats.wrong_type or ref.wrong_type or not self._once(f"type:{name}"):
            return None
        expected = "numbers" if stats.numeric else "categories"
        rate = stats.wrong_type / stats.count
        return _finding(
            name,
            "wrong_type",
            "warning",
            rate,
            0.0,
            {"kind": ref.kind, "wrong_type": 0, "count": ref.count},
            f"feature {name!r} should hold {expected} but {stats.wrong_type} of {stats.count} values "
            "this window had another type (normally none): the producer now sends this field differently.",
            window,
            self.window_s,
            event_time,
            {"wrong_type": stats.wrong_type, "observed_rate": rate, "baseline_rate": 0.0},
        )

    def to_dict(self) -> dict[str, Any]:
        """The per-window state (the reference is kept separately)."""
        return {
            "state_version": STATE_VERSION,
            "checkpoints": self.checkpoints.to_dict(),
            "out_of_range": self.out_of_range,
            "fired": sorted(self.fired),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        check_state_version(state, STATE_VERSION, "data_quality")
        self.checkpoints.load_state(state["checkpoints"])
        self.out_of_range = {k: list(v) for k, v in state["out_of_range"].items()}
        self.fired = set(state["fired"])


def _upper(p: float, n: int, z: float) -> float:
    """An upper confidence bound of a rate ``p`` estimated from ``n`` values (``z`` standard errors, at least 1/n).

    >>> round(_upper(0.02, 1000, 4.0), 4)
    0.0377
    """
    return p + z * math.sqrt(max(p * (1 - p), 1 / n) / n)


def _finding(
    feature: str,
    detector: str,
    severity: str,
    value: float,
    threshold: float,
    baseline: dict[str, Any],
    message: str,
    window: WindowAt,
    window_s: float,
    event_time: float,
    evidence: dict[str, Any],
    where_to_look: str = "",
) -> Finding:
    return Finding(
        signal=f"features.{feature}",
        detector=detector,
        kind="data_quality",
        severity=severity,
        value=round(value, 6),
        threshold=round(threshold, 6),
        baseline=baseline,
        message=message,
        event_time=event_time,
        window=tumbling_window(window.start, window_s),
        evidence={"feature": feature, "window_count": window.count, **evidence},
        where_to_look=where_to_look,
    )

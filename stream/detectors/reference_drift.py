"""Drift of a window against the reference profile, feature by feature.

Numbers: the two-sample Kolmogorov-Smirnov statistic and its p-value, the
population stability index (PSI) over the reference's deciles, the
Jensen-Shannon distance over the same bins, and the Wasserstein distance in
reference standard deviations, all read from the mergeable sketches.
Categories: a chi-square test of homogeneity of the window's and the
reference's counts (both are samples), rare categories pooled, and PSI.

A feature drifts when its test is significant after a Bonferroni correction
over every feature tested (so a model with 200 features is not drowned in
alerts) *and* its PSI reaches both ``min_psi`` and the PSI that sampling
noise alone exceeds once in a million for its bins and sample sizes (so a huge
window does not alarm on a trivial shift, nor a small one or a feature with
many categories on noise). A window is tested as it grows, at ``min_events`` and each time it has
grown by a quarter; the j-th test of a window is made at level
``6 alpha / (pi^2 j^2)`` (j = 1, 2, ...; these sum to ``alpha``), so the
family-wise false-alarm rate per window stays below ``alpha`` however often
it is re-tested. One alert per window ranks the drifting features by PSI,
so it says which inputs moved and by how much.

A shift that only just clears its floor (PSI under twice the floor) must
also have drifted in the window before: an autocorrelated input whose mean
wanders off for a minute and comes back is not a drift, and at a window's
first tests a few hundred consecutive events see such a wander whole. A
larger shift fires at once.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from scipy import special

from stream.detectors.base import Finding, WindowCheckpoints, check_state_version, tumbling_window
from stream.stats import CategoricalStats, NumericStats, WindowStats
from stream.stats.columns import BatchColumns
from stream.stats.features import OTHER
from stream.stats.paired_counts import PairedCounts

_EPS = 1e-4
MIN_EXPECTED = 5.0
# An effect counts only above the PSI that sampling noise alone exceeds this rarely.
NOISE_ALPHA = 1e-6
DECILES = np.linspace(0.1, 0.9, 9)
WASSERSTEIN_GRID = np.linspace(0.005, 0.995, 100)

# The layout of to_dict; a state without a version has this layout too (see check_state_version).
STATE_VERSION = 2


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins.

    >>> round(psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])), 6)
    0.0
    >>> psi(np.array([0.5, 0.5]), np.array([0.9, 0.1])) > 0.25
    True
    """
    return float(psi_rows(expected[None, :], actual[None, :])[0])


def psi_rows(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """:func:`psi` of each row of two 2-D arrays (bins along the rows)."""
    # np.maximum, not np.clip: on ten bins the wrapper of clip cost more than the sum.
    e = np.maximum(expected, _EPS)
    a = np.maximum(actual, _EPS)
    e, a = e / e.sum(axis=1, keepdims=True), a / a.sum(axis=1, keepdims=True)
    return np.sum((a - e) * np.log(a / e), axis=1)


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2, of two distributions over the same bins (negative weights count as 0).

    The computation of ``scipy.spatial.distance.jensenshannon(p, q, base=2)``
    without its argument handling, which cost more than the sums on ten bins.

    >>> js_distance(np.array([0.5, 0.5]), np.array([0.5, 0.5])), js_distance(np.array([1.0, 0]), np.array([0, 1.0]))
    (0.0, 1.0)
    """
    p, q = np.maximum(p, 0.0), np.maximum(q, 0.0)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2.0
    divergence = (np.sum(special.rel_entr(p, m)) + np.sum(special.rel_entr(q, m))) / 2.0
    return math.sqrt(max(float(divergence), 0.0) / math.log(2.0))


class ReferenceSide:
    """What :func:`numeric_drift` reads of a reference feature: computed once, since a reference never changes.

    A window is tested many times against the same reference; sorting the
    reference's sketch and reading its deciles at every test was a fifth of
    the test's cost.
    """

    __slots__ = ("bins", "edge_keys", "edge_signs", "mean", "quantiles", "scale", "sketch")

    def __init__(self, ref: NumericStats) -> None:
        self.sketch = ref.sketch
        table = ref.sketch.table()
        # The deciles' buckets, where a window's CDF is read (see PairedCounts.right_cdf_at).
        at = table.quantile_positions(DECILES)
        signs, keys = ref.sketch.buckets()
        self.edge_signs, self.edge_keys = signs[at], keys[at]
        # The CDF at the deciles: the share at or below each of those buckets.
        self.bins = np.diff(np.concatenate([[0.0], table.shares[at + 1], [1.0]]))
        self.quantiles = table.quantiles(WASSERSTEIN_GRID)
        self.scale = ref.moments.std or (abs(ref.moments.mean) or 1.0)
        self.mean = ref.moments.mean


def numeric_drift(
    ref: NumericStats, win: NumericStats, side: ReferenceSide | None = None, full: bool = True
) -> dict[str, float] | None:
    """KS, PSI, Jensen-Shannon and Wasserstein scores of one numeric feature (``side``: ``ref`` read already).

    ``full=False`` gives only what decides whether the feature drifted (KS
    and its p-value, PSI and its noise floor), as a test that finds nothing
    needs no more.
    """
    if not ref.sketch.count or not win.sketch.count:
        return None
    return numeric_drifts([side or ReferenceSide(ref)], [win], full)[0]


def numeric_drifts(
    sides: list[ReferenceSide], windows: list[NumericStats], full: bool = True
) -> list[dict[str, float]]:
    """:func:`numeric_drift` of several features at once, each window (holding values) against its reference's side.

    The window and reference sketches are compared bucket by bucket, all
    features together (:class:`PairedCounts`): a test of a model's features
    is a few numpy calls, not a few per feature.
    """
    paired = PairedCounts([(side.sketch, win.sketch) for side, win in zip(sides, windows, strict=True)])
    d = paired.ks_distances()
    n_ref = np.array([side.sketch.count for side in sides], dtype=np.float64)
    n_win = np.array([win.sketch.count for win in windows], dtype=np.float64)
    p_values = np.where(d > 0, special.kolmogorov(d * np.sqrt(n_ref * n_win / (n_ref + n_win))), 1.0)
    at_edges = paired.right_cdf_at(
        np.stack([side.edge_signs for side in sides]), np.stack([side.edge_keys for side in sides])
    )
    ref_bins = np.stack([side.bins for side in sides])
    ends = np.ones((len(sides), 1))
    win_bins = np.diff(np.hstack([np.zeros_like(ends), at_edges, ends]), axis=1)
    psis = psi_rows(ref_bins, win_bins)
    noise = psi_noise(len(DECILES) + 1, n_ref, n_win)
    out = []
    for i, (side, win) in enumerate(zip(sides, windows, strict=True)):
        decisive = {
            "ks": float(d[i]),
            "p_value": float(p_values[i]),
            "psi": float(psis[i]),
            "psi_noise": float(noise[i]),
        }
        if full:
            q_win = win.sketch.table().quantiles(WASSERSTEIN_GRID)
            decisive |= {
                "js": js_distance(side.bins, win_bins[i]),
                "wasserstein_std": float(np.mean(np.abs(side.quantiles - q_win)) / side.scale),
                "reference_mean": side.mean,
                "window_mean": win.moments.mean,
            }
        out.append(decisive)
    return out


def categorical_drift(ref: CategoricalStats, win: CategoricalStats) -> dict[str, Any] | None:
    """Chi-square test of homogeneity (window against reference, both samples) and PSI of one categorical feature.

    The reference is a sample too, so its frequencies are not taken as exact:
    the two count vectors form a 2 x k table, and categories expected fewer
    than ``MIN_EXPECTED`` times in either sample are pooled so the chi-square
    approximation holds.

    >>> from stream.stats import CategoricalStats
    >>> a, b = CategoricalStats(), CategoricalStats()
    >>> a.update_many(["x"] * 500 + ["y"] * 500); b.update_many(["x"] * 520 + ["y"] * 480)
    >>> categorical_drift(a, b)["p_value"] > 0.1
    True
    >>> b.update_many(["y"] * 800)
    >>> categorical_drift(a, b)["p_value"] < 1e-6
    True
    """
    ref_present = ref.count - ref.missing
    win_present = win.count - win.missing
    if not ref_present or not win_present:
        return None
    cats = [k for k in ref.counts if k != OTHER]
    ref_counts = np.array([ref.counts[k] for k in cats] + [ref.counts.get(OTHER, 0)], dtype=np.float64)
    unseen = sum(v for k, v in win.counts.items() if k not in ref.counts or k == OTHER)
    win_counts = np.array([win.counts.get(k, 0) for k in cats] + [unseen], dtype=np.float64)
    table = np.vstack([ref_counts, win_counts])
    table = table[:, table.sum(axis=0) > 0]
    chi2, dof = _homogeneity(table)
    ref_freq = (ref_counts + 0.5) / (ref_counts.sum() + 0.5 * len(ref_counts))
    top_moves = sorted(
        ((k, win_counts[i] / win_present - ref_counts[i] / ref_present) for i, k in enumerate([*cats, "(unseen)"])),
        key=lambda kv: -abs(kv[1]),
    )[:3]
    return {
        "chi2": chi2,
        # chi2.sf's own function: scipy.stats checks its arguments for far longer than this takes.
        "p_value": float(special.chdtrc(dof, chi2)) if dof else 1.0,
        "psi": psi(ref_freq, win_counts / win_counts.sum()),
        "psi_noise": psi_noise(dof + 1, ref_present, win_present),
        "top_changes": [{"category": k, "share_change": round(float(v), 4)} for k, v in top_moves],
    }


def _homogeneity(table: np.ndarray) -> tuple[float, int]:
    """Chi-square statistic and degrees of freedom of a 2 x k table, rare columns pooled."""
    smaller = table.sum(axis=1).min()

    def rare(t: np.ndarray) -> np.ndarray:
        return t.sum(axis=0) / t.sum() * smaller < MIN_EXPECTED

    low = rare(table)
    if low.any():
        table = np.hstack([table[:, ~low], table[:, low].sum(axis=1, keepdims=True)])
        if table.shape[1] > 2 and rare(table)[-1]:
            # The pooled column is still too rare to stand alone: it joins the smallest other one.
            pooled, table = table[:, -1], table[:, :-1].copy()
            table[:, int(np.argmin(table.sum(axis=0)))] += pooled
    if table.shape[1] < 2:
        return 0.0, 0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    return float(np.sum((table - expected) ** 2 / expected)), table.shape[1] - 1


def psi_noise(
    bins: int, n_ref: int | np.ndarray, n_win: int | np.ndarray, alpha: float = NOISE_ALPHA
) -> float | np.ndarray:
    """The PSI that sampling noise alone exceeds with probability ``alpha``, for two samples of one distribution
    (of each pair of sample sizes, given arrays).

    Over ``bins`` bins, PSI is about a chi-square statistic with ``bins - 1``
    degrees of freedom times ``1/n_ref + 1/n_win``, so a small window or a
    feature with many categories needs a larger effect before it counts.

    >>> round(psi_noise(10, 30000, 6000), 3), round(psi_noise(10, 30000, 200), 3)
    (0.009, 0.226)
    """
    return _chi2_isf(alpha, bins - 1) * (1 / n_ref + 1 / n_win)


@functools.lru_cache(maxsize=1024)
def _chi2_isf(alpha: float, dof: int) -> float:
    # Asked for the same few degrees of freedom at every test (chi2.isf's own function).
    return float(special.chdtri(dof, alpha))


class ReferenceDriftRule:
    """Per-window drift of every feature (and prediction, confidence) against the reference.

    >>> from stream.stats import WindowStats
    >>> rng = np.random.default_rng(0)
    >>> ev = lambda x: {"timestamp": 0, "latency_ms": 1, "features": {"x": float(x)}}
    >>> ref = WindowStats(0, 1); ref.update([ev(v) for v in rng.normal(0, 1, 2000)])
    >>> win = WindowStats(0, 60); win.update([ev(v) for v in rng.normal(1.5, 1, 500)])
    >>> [f.evidence["ranking"][0]["feature"] for f in ReferenceDriftRule(ref).check(win, 1.0)]
    ['features.x']
    """

    name = "reference_drift"

    def __init__(
        self,
        reference: WindowStats,
        *,
        alpha: float = 0.001,
        min_psi: float = 0.1,
        min_events: int = 200,
        window_s: float = 60.0,
    ) -> None:
        self.reference = reference
        self.window_s = window_s
        self.alpha = alpha
        self.min_psi = min_psi
        self.min_events = min_events
        self.checkpoints = WindowCheckpoints(min_events)
        self.fired = False  # this window has had its alert
        # Features that drifted at some test of this window, and of the window just before it.
        self.drifting: set[str] = set()
        self.drifted_before: set[str] = set()
        self._sides: dict[str, ReferenceSide] = {}

    def _side(self, name: str, ref: NumericStats) -> ReferenceSide:
        side = self._sides.get(name)
        if side is None:
            side = self._sides[name] = ReferenceSide(ref)
        return side

    def _pairs(self, window: WindowStats) -> list[tuple[str, Any, Any]]:
        pairs = [
            (f"features.{n}", self.reference.features.features.get(n), s) for n, s in window.features.features.items()
        ]
        pairs.append(("confidence", self.reference.confidence, window.confidence))
        pairs.append(("prediction", self.reference.prediction_scores, window.prediction_scores))
        pairs.append(("prediction_class", self.reference.prediction_classes, window.prediction_classes))
        return [(n, r, w) for n, r, w in pairs if r is not None and r.kind == w.kind]

    def scores(self, window: WindowStats, alpha: float | None = None, full: bool = True) -> list[dict[str, Any]]:
        """Drift scores of every comparable signal, most drifted first, judged at level ``alpha``.

        ``full=False``: numeric features get only the scores that decide (see :func:`numeric_drift`).
        """
        alpha = self.alpha if alpha is None else alpha
        scored: list[tuple[str, str, dict[str, Any] | None]] = []
        # The numeric features are scored together, into their places in the list.
        numeric: list[tuple[int, ReferenceSide, NumericStats]] = []
        for name, ref, win in self._pairs(window):
            if isinstance(ref, NumericStats):
                if ref.sketch.count and win.sketch.count:
                    numeric.append((len(scored), self._side(name, ref), win))
                scored.append((name, ref.kind, None))
            else:
                scored.append((name, ref.kind, categorical_drift(ref, win)))
        if numeric:
            drifts = numeric_drifts([side for _, side, _ in numeric], [win for _, _, win in numeric], full)
            for (at, _, _), drift in zip(numeric, drifts, strict=True):
                scored[at] = (scored[at][0], scored[at][1], drift)
        out = [{"feature": name, "kind": kind, **score} for name, kind, score in scored if score is not None]
        tested = max(len(out), 1)
        for s in out:
            s["p_adjusted"] = min(1.0, s["p_value"] * tested)
            s["psi_floor"] = max(self.min_psi, s.pop("psi_noise"))
            s["drifted"] = s["p_adjusted"] < alpha and s["psi"] >= s["psi_floor"]
        out.sort(key=lambda s: (not s["drifted"], -s["psi"]))
        return out

    def events_until_test(self, window_start: float, count: int) -> int | None:
        """Events the window starting at ``window_start`` (holding ``count``) takes before its next test.

        None: this window had its alert and is not tested again. See :class:`WindowCheckpoints`.

        >>> rule = ReferenceDriftRule(WindowStats(0, 1), min_events=200)
        >>> rule.events_until_test(60.0, 150), rule.events_until_test(60.0, 0)
        (50, 200)
        """
        if self.fired and window_start == self.checkpoints.window_start:
            return None
        return self.checkpoints.events_until_due(window_start, count)

    def check_window(
        self, window: WindowStats, events: list[dict[str, Any]], columns: BatchColumns, event_time: float
    ) -> list[Finding]:
        """Test the window when a test is due (see :class:`WindowDetector`); the events are in it already."""
        return self.check(window, event_time)

    def check(self, window: WindowStats, event_time: float) -> list[Finding]:
        """Test ``window`` (the current tumbling window) when it is due; at most one finding per window."""
        previous = self.checkpoints.window_start
        if self.checkpoints.new_window(window.start):
            self.fired = False
            follows = previous is not None and window.start - previous == self.window_s
            self.drifted_before, self.drifting = (self.drifting if follows else set()), set()
        if self.fired or not self.checkpoints.reached(window.start, window.count):
            return []
        spent = self.checkpoints.level(self.alpha)
        ranking = self.scores(window, spent, full=False)
        if any(s["drifted"] for s in ranking):
            # The decision is the same either way; the alert's ranking shows every score.
            ranking = self.scores(window, spent)
        self.drifting |= {s["feature"] for s in ranking if s["drifted"]}
        drifted = [
            s
            for s in ranking
            if s["drifted"] and (s["psi"] >= 2 * s["psi_floor"] or s["feature"] in self.drifted_before)
        ]
        if not drifted:
            return []
        self.fired = True
        top = drifted[0]
        severity = "critical" if top["psi"] >= 0.25 else "warning"
        names = ", ".join(f"{s['feature']} (PSI {s['psi']:.2f})" for s in drifted[:3])
        message = (
            f"{len(drifted)} of {len(ranking)} inputs drifted from the reference "
            f"({self.reference.count} events) in {window.count} events this window: {names}."
        )
        return [
            Finding(
                signal=top["feature"],
                detector=self.name,
                kind="drift",
                severity=severity,
                value=round(top["psi"], 6),
                threshold=round(top["psi_floor"], 6),
                baseline={"events": self.reference.count, "alpha": spent, "tests": len(ranking)},
                message=message,
                event_time=event_time,
                window=tumbling_window(window.start, self.window_s),
                evidence={"drifted": len(drifted), "ranking": [_round(s) for s in ranking[:10]]},
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        """Per-window state (the reference is kept separately)."""
        return {
            "state_version": STATE_VERSION,
            "checkpoints": self.checkpoints.to_dict(),
            "fired": self.fired,
            "drifting": sorted(self.drifting),
            "drifted_before": sorted(self.drifted_before),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        if state.get("state_version", 1) == 1:  # no memory of the window before yet: it starts empty
            state = {**state, "state_version": STATE_VERSION}
        check_state_version(state, STATE_VERSION, "reference_drift")
        self.checkpoints.load_state(state["checkpoints"])
        self.fired = state["fired"]
        self.drifting = set(state.get("drifting", ()))
        self.drifted_before = set(state.get("drifted_before", ()))


def _round(score: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in score.items()}

"""Abrupt level shifts, placed to the event, robust to trends and heavy tails.

At every split point the median of the next ``after`` values is compared with
the median of the ``before`` values ahead of it, in units of the spread
*inside* the two windows (their pooled median absolute deviation). A jump
that is large against the local noise fires; a steady trend does not, since
it widens the windows as much as it separates them, and a random walk moves
its medians no further than its own jitter. Medians and MADs make the test
indifferent to single outliers; positive, right-skewed signals (amounts,
latencies, counts) are compared on a log scale.

Two guards keep it quiet on ordinary data. A window whose values are nearly
all equal (small integers, a mostly-zero flag) has a MAD of zero, so the
spread used is never below ``floor`` times the typical spread seen so far,
and falls back to the standard deviation when the MAD is zero. After a
change the rule re-baselines: the windows restart after the new level's first
value, so one shift gives one finding, not one per event.

When the threshold is crossed, the split is moved to the point within half a
window either side that best cuts the values into two flat pieces (least
absolute deviation from each piece's median) before it is reported, so
``change_started_at`` lands on the event where the level changed. The
decision depends only on the values and their order, never on how they were
batched.

This is a two-window median test in the family of moving-window change
detectors (Basseville & Nikiforov 1993, "Detection of Abrupt Changes", ch.
2; robust scale: Rousseeuw & Croux 1993).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from stream.detectors.base import (
    Finding,
    check_state_version,
    float_series,
    right_skewed,
    row_groups,
    row_medians,
    stream_window,
)
from stream.detectors.lean_imports import smooth

STATE_VERSION = 2
MAD_TO_SD = 1.4826
# Split points screened: every third. The change is then placed by a search around the hit.
STRIDE = 3


class LevelShiftRule:
    """Two-window robust level-shift detector on one per-event signal.

    Parameters:
        signal: the signal's name, as it appears in findings.
        before: values in the window before a split point (the baseline).
        after: values in the window after it; a change is reported at most
            ``2 * after`` values after it happened.
        threshold: the shift of the median, in local spreads, that fires.
        floor: the spread used is at least this share of the typical spread
            seen so far (guards discrete and nearly constant signals).
        smoothing: weight of each new spread in the typical spread.
        log_scale: compare ``log(value)``; ``None`` decides from the first
            ``warmup`` values (all positive and mean above 1.25 x median).
        warmup: values seen before the scale is decided and testing starts.
        direction: ``up``, ``down`` or ``both``: the jumps reported (the rule
            re-baselines after a jump either way).
        window_s: the tumbling window size the finding names.

    >>> rule = LevelShiftRule("features.x", window_s=60)
    >>> rng = np.random.default_rng(1)
    >>> calm = rng.normal(10.0, 1.0, 500)
    >>> rule.update(calm.tolist(), [i * 0.01 for i in range(500)])
    []
    >>> jumped = rng.normal(20.0, 1.0, 100)
    >>> found = rule.update(jumped.tolist(), [5.0 + i * 0.01 for i in range(100)])
    >>> len(found), found[0].evidence["change_started_at"]
    (1, 5.0)
    >>> rule.update(rng.normal(20.0, 1.0, 500).tolist(), [6.0 + i * 0.01 for i in range(500)])
    []
    """

    name = "level_shift"

    def __init__(
        self,
        signal: str,
        *,
        before: int = 20,
        after: int = 10,
        threshold: float = 6.0,
        floor: float = 0.5,
        smoothing: float = 0.02,
        log_scale: bool | None = None,
        warmup: int = 50,
        direction: str = "both",
        window_s: float = 60.0,
        kind: str = "drift",
    ) -> None:
        if before < 3 or after < 3:
            raise ValueError("before and after must be at least 3")
        if direction not in ("up", "down", "both"):
            raise ValueError("direction must be up, down or both")
        self.direction = direction
        if threshold <= 0 or not 0 < smoothing <= 1 or floor < 0:
            raise ValueError("threshold must be positive, smoothing in (0, 1], floor >= 0")
        self.signal = signal
        self.before = before
        self.after = after
        self.threshold = threshold
        self.floor = floor
        self.smoothing = smoothing
        self.log_scale = log_scale
        self.warmup = max(warmup, before + after)
        self.window_s = window_s
        self.kind = kind
        self.xs = np.empty(0)  # recent values (transformed), oldest first
        self.ts = np.empty(0)
        self.origin = 0  # how many values were dropped before xs[0]
        self.cut = 0  # index in xs of the last change (the baseline starts there)
        self.next_split = 0  # first split point of xs not yet tested
        self.typical: float | None = None
        self.last_ratio = 0.0

    def update(self, values: Sequence[float], timestamps: Sequence[float]) -> list[Finding]:
        """Feed values with their event timestamps; return one finding per change."""
        if not self._take(values, timestamps):
            return []
        findings = self._scan_all()
        self._trim()
        return findings

    @staticmethod
    def update_together(
        rules: Sequence[LevelShiftRule], series: Sequence[tuple[Sequence[float], Sequence[float]]]
    ) -> list[list[Finding]]:
        """``rule.update(values, timestamps)`` for each rule and its series, with the same findings and states.

        The rules of a model's signals take a batch with as many values each,
        so most stand at the same split points. Their windows' medians and
        spreads there are computed as one array, a row per rule, instead of a
        dozen numpy calls per rule; a rule whose shift crosses the threshold
        in the batch, or that is not in step with another, scans on its own.
        """
        found: list[list[Finding]] = [[] for _ in rules]
        in_step: dict[tuple[int, ...], list[int]] = {}
        for at, (rule, (values, timestamps)) in enumerate(zip(rules, series, strict=True)):
            if rule._take(values, timestamps):
                first, last = rule._splits()
                key = (len(rule.xs), first, last, rule.before, rule.after, rule.smoothing)
                in_step.setdefault(key, []).append(at)
        for (_, first, last, before, after, _), ats in in_step.items():
            per_row = (max(last - first, 0) // STRIDE + 1) * (before + after)
            for group in row_groups(len(ats), per_row):
                members = [rules[at] for at in ats[group]]
                quiet = _scan_quietly(members, first, last) if last >= first else [True] * len(members)
                for at, rule, done in zip(ats[group], members, quiet, strict=True):
                    if not done:
                        found[at] = rule._scan_all()
                    rule._trim()
        return found

    def _take(self, values: Sequence[float], timestamps: Sequence[float]) -> bool:
        """Append the values (on the log scale when chosen); whether the scale is decided and scans may run."""
        xs, ts = float_series(values, timestamps)
        if self.log_scale:
            xs = _log(xs)
        self.xs = np.concatenate([self.xs, xs])
        self.ts = np.concatenate([self.ts, ts])
        if self.log_scale is None:
            if len(self.xs) < self.warmup:
                return False
            head = self.xs[: self.warmup]
            self.log_scale = right_skewed(head.min(), head.mean(), float(np.median(head)))
            if self.log_scale:
                self.xs = _log(self.xs)
        return True

    def _scan_all(self) -> list[Finding]:
        """Scan until no change is left to find; the changes in the watched direction."""
        findings: list[Finding] = []
        while (found := self._scan()) is not None:
            rose = found.evidence["after"] > found.evidence["before"]
            if self.direction == "both" or (self.direction == "up") == rose:
                findings.append(found)
        return findings

    def _splits(self) -> tuple[int, int]:
        """The first split point to screen and the last with a full window after it."""
        first = max(self.next_split, self.cut + self.before)
        last = len(self.xs) - self.after
        # Every STRIDE-th split (counted from the first value ever seen, so batching does not
        # matter) is screened; the split is placed exactly afterwards.
        first += -(self.origin + first) % STRIDE
        return first, last

    def _scan(self) -> Finding | None:
        """Test every split point that has its full windows; report the first change, if any."""
        x = self.xs
        first, last = self._splits()
        if last < first:
            return None
        ratio, local = self._ratios(x, first, last, STRIDE)
        after = self._typical_after(local)
        typical = np.concatenate([[self._typical_start(local)], after[:-1]])
        scale = np.maximum(local, self.floor * typical)
        shift = ratio / np.maximum(scale, 1e-12)
        over = np.flatnonzero(shift > self.threshold)
        if not over.size:
            self._advance(after, last + 1)
            self.last_ratio = float(shift[-1])
            return None
        k = int(over[0])
        hit = first + STRIDE * k
        # Place the change at the best split near the crossing, which needs the windows of
        # every candidate split: wait for them rather than guess.
        lo, hi = max(hit - self.after // 2, self.cut + self.before), hit + self.after - 1
        if hi > last:
            self._advance(after[:k], hit)
            return None
        at = self._best_split(x, lo, hi)
        cand_ratio, cand_local = self._ratios(x, at, at)
        shift_at = float(cand_ratio[0] / max(cand_local[0], self.floor * typical[k], 1e-12))
        self._advance(after[:k], hit)
        finding = self._finding(x, at, hi + self.after - 1, max(shift_at, float(shift[k])))
        self.cut = at
        self.next_split = at + self.before
        return finding

    def _best_split(self, x: np.ndarray, lo: int, hi: int) -> int:
        """The split in lo..hi that best cuts the values around it into two flat pieces (least absolute error)."""
        span = x[max(lo - self.before, self.cut) : hi + self.after]
        offset = max(lo - self.before, self.cut)
        costs = []
        for s in range(lo, hi + 1):
            left, right = span[: s - offset], span[s - offset :]
            costs.append(np.abs(left - np.median(left)).sum() + np.abs(right - np.median(right)).sum())
        return lo + int(np.argmin(costs))

    def _ratios(self, x: np.ndarray, first: int, last: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """|median after - median before| and the pooled local spread, for splits first..last by ``stride``."""
        ratio, spread = _window_ratios(x[None, :], first, last, self.before, self.after, stride)
        return ratio[0], spread[0]

    def _typical_start(self, local: np.ndarray) -> float:
        return self.typical if self.typical is not None else float(local[0])

    def _typical_after(self, local: np.ndarray) -> np.ndarray:
        """The exponential average of the spreads, after each of ``local`` is taken in."""
        return _typical_after_rows(local[None, :], np.array([self._typical_start(local)]), self.smoothing)[0]

    def _advance(self, typical_after: np.ndarray, next_split: int) -> None:
        """Move on to ``next_split``; the typical spread is where ``typical_after`` (of the splits passed) left it."""
        if typical_after.size:
            self.typical = float(typical_after[-1])
        self.next_split = next_split

    def _trim(self) -> None:
        keep_from = max(0, max(self.next_split, self.cut + self.before) - self.before - self.after // 2)
        keep_from = min(keep_from, max(0, len(self.xs) - self.before - 2 * self.after))
        if keep_from:
            self.xs, self.ts = self.xs[keep_from:], self.ts[keep_from:]
            self.origin += keep_from
            self.cut = max(self.cut - keep_from, 0)
            self.next_split -= keep_from

    def _level(self, v: float) -> float:
        return float(np.exp(v)) if self.log_scale else float(v)

    def _finding(self, x: np.ndarray, at: int, seen_until: int, ratio: float) -> Finding:
        level_before = self._level(float(np.median(x[max(at - self.before, self.cut) : at])))
        level_after = self._level(float(np.median(x[at : at + self.after])))
        started, detected = float(self.ts[at]), float(self.ts[min(seen_until, len(self.ts) - 1)])
        change = "rose" if level_after > level_before else "fell"
        return Finding(
            signal=self.signal,
            detector=self.name,
            kind=self.kind,
            severity="critical" if ratio >= 2 * self.threshold else "warning",
            value=round(level_after, 6),
            threshold=self.threshold,
            baseline={"median": round(level_before, 6), "events": self.before},
            message=(
                f"{self.signal} {change} abruptly from a median of {level_before:.4g} to {level_after:.4g}, "
                f"{ratio:.1f} times the local spread (threshold {self.threshold:g})"
                + ("; compared on a log scale." if self.log_scale else ".")
            ),
            event_time=detected,
            window=stream_window(detected, self.window_s),
            evidence={
                "before": level_before,
                "after": level_after,
                "shift_in_spreads": round(ratio, 3),
                "change_started_at": started,
                "log_scale": bool(self.log_scale),
            },
            change_point=True,
        )

    def scores(self) -> dict[str, float]:
        """``shift_sd``: the latest median shift in local spreads (what the threshold is compared with)."""
        return {"shift_sd": self.last_ratio}

    def to_dict(self) -> dict[str, Any]:
        """Plain, versioned state."""
        return {
            "state_version": STATE_VERSION,
            "xs": self.xs.copy(),
            "ts": self.ts.copy(),
            "origin": self.origin,
            "cut": self.cut,
            "next_split": self.next_split,
            "typical": self.typical,
            "log_scale": self.log_scale,
            "last_ratio": self.last_ratio,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved; a state of another version is refused."""
        check_state_version(state, STATE_VERSION, "level_shift")
        self.xs = np.asarray(state["xs"], dtype=np.float64)
        self.ts = np.asarray(state["ts"], dtype=np.float64)
        self.origin, self.cut, self.next_split = int(state["origin"]), int(state["cut"]), int(state["next_split"])
        self.typical = None if state["typical"] is None else float(state["typical"])
        self.log_scale = None if state["log_scale"] is None else bool(state["log_scale"])
        self.last_ratio = float(state["last_ratio"])


def _log(xs: np.ndarray) -> np.ndarray:
    # A zero or negative value in a signal judged positive becomes a very low level, not an error.
    return np.log(np.maximum(xs, 1e-300))


def _window_ratios(
    x: np.ndarray, first: int, last: int, before: int, after: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`LevelShiftRule._ratios` of each row of ``x``: a row of ratios and of spreads per row."""
    b, a = before, after
    span = x[:, first - b : last + a]
    rows, step = span.strides
    count = span.shape[1] - b - a + 1
    # Every window of b + a values as a read-only view (sliding_window_view's checks cost more than this).
    windows = as_strided(span, (span.shape[0], count, b + a), (rows, step, step), writeable=False)[:, ::stride]
    shape = windows.shape[:2]
    left, right = windows[:, :, :b], windows[:, :, b:]
    # Checked once here: the deviations of finite values hold no NaN either.
    finite = bool(np.isfinite(span).all())
    m_left = row_medians(left.reshape(-1, b), finite).reshape(shape)
    m_right = row_medians(right.reshape(-1, a), finite).reshape(shape)
    dev = np.concatenate([np.abs(left - m_left[:, :, None]), np.abs(right - m_right[:, :, None])], axis=2)
    spread = row_medians(dev.reshape(-1, b + a), finite).reshape(shape) * MAD_TO_SD
    flat = ~(spread > 0)
    if flat.any():
        # The standard deviation only where the MAD is zero: most windows never are, but those of a
        # signal that is nearly always 0 (an error flag) nearly all are.
        spread[flat] = windows[flat].std(axis=1)
    return np.abs(m_right - m_left), spread


def _typical_after_rows(local: np.ndarray, start: np.ndarray, smoothing: float) -> np.ndarray:
    """:meth:`LevelShiftRule._typical_after` of each row of ``local``, each from its own ``start``."""
    w = 1 - (1 - smoothing) ** STRIDE  # the weight of STRIDE values, one split tested per STRIDE
    return smooth(w, 1.0 - w, local, ((1.0 - w) * start)[:, None])


def _scan_quietly(rules: list[LevelShiftRule], first: int, last: int) -> list[bool]:
    """The screening scan of :meth:`LevelShiftRule._scan` for rules at the same split points, as one array.

    Each rule whose shift stays under its threshold moves on as its own scan
    would have; a rule that crosses is left as it was (False), to scan alone.
    """
    head = rules[0]
    x = np.stack([rule.xs for rule in rules])
    ratio, local = _window_ratios(x, first, last, head.before, head.after, STRIDE)
    starts = np.array([rule._typical_start(row) for rule, row in zip(rules, local, strict=True)])
    after = _typical_after_rows(local, starts, head.smoothing)
    typical = np.concatenate([starts[:, None], after[:, :-1]], axis=1)
    floor = np.array([rule.floor for rule in rules])[:, None]
    shift = ratio / np.maximum(np.maximum(local, floor * typical), 1e-12)
    crossed = (shift > np.array([rule.threshold for rule in rules])[:, None]).any(axis=1)
    for rule, row_after, row_shift, crossing in zip(rules, after, shift, crossed.tolist(), strict=True):
        if not crossing:
            rule._advance(row_after, last + 1)
            rule.last_ratio = float(row_shift[-1])
    return (~crossed).tolist()

"""Sustained shifts of a signal's distribution: CUSUM on reference percentiles.

Each value is replaced by its percentile among a baseline of the signal's
first ``warmup`` values (its mid-rank, the probability integral transform).
Whatever the signal's distribution (lognormal amounts, small integers,
scores in [0, 1]), those percentiles average 0.5 while nothing changes, and
they are bounded, so one wild value moves them by little. They are averaged
over blocks of ``block`` values and a two-sided CUSUM (Page 1954) accumulates
how far the block means sit from 0.5. The block means' spread is measured on
the baseline, so correlation between neighbouring values widens the limits
instead of causing alarms; it is never taken below what independent values
would give.

``threshold`` is in block standard deviations and ``min_shift`` is the
smallest move of the mean percentile worth an alert (0.1: the median moved to
about the 60th percentile of the baseline); the CUSUM's allowance is half of
it, widened by three standard errors of the baseline's own median (a
baseline of 200 values is itself a sample), so drifts smaller than that never
accumulate. The start of a change is
the first block after the CUSUM last stood at zero (the maximum-likelihood
change time for a mean shift). After an alert the baseline is learnt again
from the values since that start: one change, one alert.

References: E. S. Page, "Continuous inspection schemes", Biometrika 41
(1954); D. C. Montgomery, "Introduction to Statistical Quality Control", ch.
9 (tabular CUSUM).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.detectors.base import Finding

STATE_VERSION = 1
UNIFORM_SD = 12**-0.5  # standard deviation of a continuous percentile


class PercentileCusumRule:
    """Two-sided CUSUM on block means of reference percentiles.

    Parameters:
        signal: the signal's name, as it appears in findings.
        warmup: values that form the baseline (and again after each change).
        block: values averaged into one CUSUM step.
        threshold: the CUSUM limit, in standard deviations of a block mean.
        min_shift: the smallest shift of the mean percentile to report.
        direction: ``up``, ``down`` or ``both``.
        window_s: the tumbling window size the finding names.

    >>> rule = PercentileCusumRule("features.amount", window_s=60)
    >>> rng = np.random.default_rng(3)
    >>> rule.update(rng.lognormal(3, 1.2, 5000).tolist(), [i * 0.01 for i in range(5000)])
    []
    >>> found = rule.update(rng.lognormal(3.6, 1.2, 500).tolist(), [50 + i * 0.01 for i in range(500)])
    >>> len(found), found[0].evidence["direction"], found[0].evidence["change_started_at"] >= 50
    (1, 'up', True)
    """

    name = "cusum"

    def __init__(
        self,
        signal: str,
        *,
        warmup: int = 200,
        block: int = 10,
        threshold: float = 12.0,
        min_shift: float = 0.1,
        direction: str = "both",
        window_s: float = 60.0,
        kind: str = "drift",
    ) -> None:
        if warmup < 5 * block or block < 1:
            raise ValueError("warmup must hold at least five blocks")
        if threshold <= 0 or not 0 <= min_shift < 0.5:
            raise ValueError("threshold must be positive and min_shift in [0, 0.5)")
        if direction not in ("up", "down", "both"):
            raise ValueError("direction must be up, down or both")
        self.signal = signal
        self.warmup = warmup
        self.block = block
        self.threshold = threshold
        self.min_shift = min_shift
        self.direction = direction
        self.window_s = window_s
        self.kind = kind
        self.baseline: list[float] = []  # sorted once full
        self.sd = 0.0
        self.baseline_error = 0.0
        self.partial: list[float] = []  # percentiles of the block being filled
        self.partial_start: float | None = None
        self.up = self.down = 0.0
        self.up_start: float | None = None
        self.down_start: float | None = None
        # Recent raw values with their times: the next baseline after a change starts at its onset.
        self.recent: deque[tuple[float, float]] = deque(maxlen=warmup)
        self.seen = 0
        self.mean_since: dict[str, list[float]] = {"up": [0.0, 0], "down": [0.0, 0]}

    @property
    def ready(self) -> bool:
        """Whether the baseline is complete and values are being tested."""
        return len(self.baseline) >= self.warmup and self.sd > 0

    def update(self, values: Sequence[float], timestamps: Sequence[float]) -> list[Finding]:
        """Feed values with their event timestamps; return one finding per change."""
        xs = np.asarray(values, dtype=np.float64).tolist()
        ts = np.asarray(timestamps, dtype=np.float64).tolist()
        if len(xs) != len(ts):
            raise ValueError(f"{len(xs)} values but {len(ts)} timestamps")
        findings: list[Finding] = []
        i = 0
        while i < len(xs):
            if not self.ready:
                take = min(self.warmup - len(self.baseline), len(xs) - i)
                self._learn(xs[i : i + take])
                self.recent.extend(zip(xs[i : i + take], ts[i : i + take], strict=True))
                self.seen += take
                i += take
                continue
            found, used = self._test(xs[i:], ts[i:])
            self.recent.extend(zip(xs[i : i + used], ts[i : i + used], strict=True))
            self.seen += used
            i += used
            if found is not None:
                findings.append(found)
        return findings

    def _learn(self, xs: list[float]) -> None:
        self.baseline.extend(xs)
        if len(self.baseline) < self.warmup:
            return
        in_order = np.asarray(self.baseline)
        self.baseline.sort()
        # Block means in arrival order: neighbours that move together widen their spread.
        pit = self._percentiles(in_order)
        usable = len(pit) - len(pit) % self.block
        means = pit[:usable].reshape(-1, self.block).mean(axis=1)
        independent = float(pit.std()) / self.block**0.5
        self.sd = max(float(means.std(ddof=1)), independent, 1e-9)
        # The baseline is a sample too: its own median is off by about this much in percentile terms.
        self.baseline_error = float(pit.std()) / len(pit) ** 0.5

    def _percentiles(self, xs: np.ndarray) -> np.ndarray:
        ref = np.asarray(self.baseline)
        lo = np.searchsorted(ref, xs, "left")
        hi = np.searchsorted(ref, xs, "right")
        return (lo + hi) / (2.0 * len(ref))

    def _test(self, xs: list[float], ts: list[float]) -> tuple[Finding | None, int]:
        """Run the CUSUM over whole blocks of ``xs``; stop at the first change. Returns it and values used."""
        pit = self._percentiles(np.asarray(xs)).tolist()
        allowance = max(0.5 * self.sd, self.min_shift / 2) + 3 * self.baseline_error
        limit = self.threshold * self.sd
        i = 0
        while i < len(pit):
            if not self.partial:
                self.partial_start = ts[i]
            take = min(self.block - len(self.partial), len(pit) - i)
            self.partial.extend(pit[i : i + take])
            i += take
            if len(self.partial) < self.block:
                break
            z = sum(self.partial) / self.block - 0.5
            start = self.partial_start
            self.partial = []
            if self.up <= 0:
                self.up_start, self.mean_since["up"] = start, [0.0, 0]
            if self.down <= 0:
                self.down_start, self.mean_since["down"] = start, [0.0, 0]
            self.up = max(0.0, self.up + z - allowance)
            self.down = max(0.0, self.down - z - allowance)
            for side in ("up", "down"):
                acc = self.mean_since[side]
                acc[0] += z
                acc[1] += 1
            side = "up" if self.up > limit else "down" if self.down > limit else None
            if side is None:
                continue
            if self.direction not in ("both", side):
                setattr(self, side, 0.0)
                continue
            found = self._finding(side, ts[i - 1])
            self._rebaseline(side, xs[:i], ts[:i])
            return found, i
        return None, len(xs)

    def _rebaseline(self, side: str, xs: list[float], ts: list[float]) -> None:
        onset = self.up_start if side == "up" else self.down_start
        self.recent.extend(zip(xs, ts, strict=True))
        since = [x for x, t in self.recent if onset is None or t >= onset]
        self.baseline, self.sd, self.partial = [], 0.0, []
        self.up = self.down = 0.0
        self.recent.clear()
        self._learn(since[-self.warmup :])

    def _finding(self, side: str, at: float) -> Finding:
        total, blocks = self.mean_since[side]
        mean_pct = 0.5 + total / max(blocks, 1)
        onset = self.up_start if side == "up" else self.down_start
        median = float(np.median(self.baseline))
        start = at - at % self.window_s
        statistic = self.up if side == "up" else self.down
        return Finding(
            signal=self.signal,
            detector=self.name,
            kind=self.kind,
            severity="critical" if abs(mean_pct - 0.5) >= 0.25 else "warning",
            value=round(mean_pct, 6),
            threshold=self.threshold,
            baseline={"median": round(median, 6), "events": self.warmup, "mean_percentile": 0.5},
            message=(
                f"{self.signal} moved {'up' if side == 'up' else 'down'}: since the change its values sit on average "
                f"at the {100 * mean_pct:.0f}th percentile of the baseline ({self.warmup} values, median "
                f"{median:.4g}), where the 50th is expected (CUSUM {statistic / self.sd:.1f} block sd, "
                f"limit {self.threshold:g})."
            ),
            event_time=at,
            window={"type": "stream", "start": start, "end": start + self.window_s, "size_s": self.window_s},
            evidence={
                "direction": side,
                "mean_percentile": round(mean_pct, 4),
                "blocks": int(blocks),
                "change_started_at": onset,
            },
        )

    def scores(self) -> dict[str, float]:
        """``shift_sd``: the larger CUSUM side, in block standard deviations."""
        if not self.ready:
            return {}
        return {"shift_sd": max(self.up, self.down) / self.sd}

    def to_dict(self) -> dict[str, Any]:
        """Plain, versioned state."""
        return {
            "state_version": STATE_VERSION,
            "baseline": list(self.baseline),
            "sd": self.sd,
            "baseline_error": self.baseline_error,
            "partial": list(self.partial),
            "partial_start": self.partial_start,
            "up": self.up,
            "down": self.down,
            "up_start": self.up_start,
            "down_start": self.down_start,
            "recent": [list(p) for p in self.recent],
            "seen": self.seen,
            "mean_since": {k: list(v) for k, v in self.mean_since.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved; a state of another version is refused."""
        if state.get("state_version") != STATE_VERSION:
            raise ValueError(f"cusum state version {state.get('state_version')!r}, expected {STATE_VERSION}")
        self.baseline = [float(v) for v in state["baseline"]]
        self.sd = float(state["sd"])
        self.baseline_error = float(state["baseline_error"])
        self.partial = [float(v) for v in state["partial"]]
        self.partial_start = state["partial_start"]
        self.up, self.down = float(state["up"]), float(state["down"])
        self.up_start, self.down_start = state["up_start"], state["down_start"]
        self.recent = deque(((float(x), float(t)) for x, t in state["recent"]), maxlen=self.warmup)
        self.seen = int(state["seen"])
        self.mean_since = {k: [float(v[0]), int(v[1])] for k, v in state["mean_since"].items()}

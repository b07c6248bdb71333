"""Sustained shifts of a signal's distribution: CUSUM on reference percentiles.

Each value is replaced by its percentile among a baseline of the signal's
first ``warmup`` values (its mid-rank, the probability integral transform).
Whatever the signal's distribution (lognormal amounts, small integers,
scores in [0, 1]), those percentiles average 0.5 while nothing changes, and
they are bounded, so one wild value moves them by little. Two statistics are
averaged over blocks of ``block`` values: the percentile itself (where the
values sit: a shift of location) and its distance from 0.5 (how spread out
they are: a change of variance). A two-sided CUSUM (Page 1954) accumulates
how far each block mean sits from its baseline. The block means' spread is
measured on the baseline, so correlation between neighbouring values widens
the limits instead of causing alarms; it is never taken below what
independent values would give.

``threshold`` is in block standard deviations and ``min_shift`` is the
smallest move of a block statistic worth an alert (0.1 of the mean
percentile: the median moved to about the 60th percentile of the baseline);
the CUSUM's allowance is half of it, widened by three standard errors of the
baseline's own mean (a baseline of 200 values is itself a sample), so drifts
smaller than that never accumulate. The start of a change is the first block
after the CUSUM last stood at zero (the maximum-likelihood change time for a
mean shift). After an alert the baseline is learnt again from the values
since that start: one change, one alert.

References: E. S. Page, "Continuous inspection schemes", Biometrika 41
(1954); D. C. Montgomery, "Introduction to Statistical Quality Control", ch.
9 (tabular CUSUM).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stream.detectors.base import Finding, check_state_version, float_series, percentiles, row_groups, stream_window
from stream.detectors.two_sided_cusum import TwoSidedCusum, step_together

STATE_VERSION = 2
# Fewer blocks than this go through the CUSUMs one at a time: taking blocks at once costs
# about as much as stepping twenty of them, whatever their number.
MIN_BLOCKS_AT_ONCE = 16
# Each statistic: its name, and what its rising and falling sides mean.
STATISTICS = {"location": ("up", "down"), "spread": ("wider", "narrower")}


class PercentileCusumRule:
    """Two-sided CUSUMs on block means of reference percentiles: location and spread.

    Parameters:
        signal: the signal's name, as it appears in findings.
        warmup: values that form the baseline (and again after each change).
        block: values averaged into one CUSUM step.
        threshold: the CUSUM limit, in standard deviations of a block mean.
        min_shift: the smallest shift of a block statistic to report.
        direction: ``up``, ``down`` or ``both`` (of the location; spread is watched both ways).
        spread: also watch the spread (variance) of the values.
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
        spread: bool = True,
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
        self.spread = spread
        self.window_s = window_s
        self.kind = kind
        # A list while it fills; once full, a sorted array (a model has a dozen of these rules).
        self.baseline: list[float] | np.ndarray = []
        self.cusums: dict[str, TwoSidedCusum] = {}
        self.partial: list[float] = []  # percentiles of the block being filled
        self.partial_start: float | None = None
        # The last ``warmup`` raw values and their times: the next baseline after a change starts at its onset.
        self.recent_values = np.zeros(0)
        self.recent_times = np.zeros(0)

    @property
    def ready(self) -> bool:
        """Whether the baseline is complete and values are being tested."""
        return bool(self.cusums)

    def update(self, values: Sequence[float], timestamps: Sequence[float]) -> list[Finding]:
        """Feed values with their event timestamps; return one finding per change."""
        xs, ts = float_series(values, timestamps)
        findings: list[Finding] = []
        i = 0
        kept = 0  # xs[:kept] are in the recent values
        while i < len(xs):
            if not self.ready:
                take = min(self.warmup - len(self.baseline), len(xs) - i)
                self._learn(xs[i : i + take].tolist())
                used, found = take, None
            else:
                found, used = self._test(xs[i:], ts[i:])
            i += used
            if found is not None:
                self._remember(xs[kept:i], ts[kept:i])
                kept = i
                findings.append(found)
                self._rebaseline(found.evidence["change_started_at"])
        self._remember(xs[kept:], ts[kept:])
        return findings

    @staticmethod
    def update_together(
        rules: Sequence[PercentileCusumRule], series: Sequence[tuple[Sequence[float], Sequence[float]]]
    ) -> list[list[Finding]]:
        """``rule.update(values, timestamps)`` for each rule and its series, with the same findings and states.

        A model's signals come in one batch each with as many values, so
        their rules usually stand at the same point: ready, their last
        blocks equally full. Such rules run their CUSUMs over the batch's
        blocks as one array per statistic and side (a few blocks: per block),
        instead of a few numpy calls each. A rule whose CUSUM would cross its
        limit in the batch, or that is not in step with others, takes its values on its own.
        """
        found: list[list[Finding] | None] = [None] * len(rules)
        in_step: dict[tuple[int, int, int, tuple[str, ...]], list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for at, (rule, (values, timestamps)) in enumerate(zip(rules, series, strict=True)):
            xs, ts = float_series(values, timestamps)
            head = -len(rule.partial) % rule.block  # the values that complete the block being filled
            if rule.ready and len(xs) - head >= rule.block:
                key = (rule.block, len(rule.partial), len(xs), tuple(rule.cusums))
                in_step.setdefault(key, []).append((at, xs, ts))
            else:
                found[at] = rule.update(xs, ts)
        for (block, partial, n, names), members in in_step.items():
            whole = (n - -partial % block) // block
            if len(members) == 1 and whole < MIN_BLOCKS_AT_ONCE:  # stepping alone costs less
                at, xs, ts = members[0]
                found[at] = rules[at].update(xs, ts)
                continue
            for group in row_groups(len(members), n):
                in_group = members[group]
                _blocks_together([rules[at] for at, _, _ in in_group], in_group, block, partial, n, names, found)
        return [f if f is not None else [] for f in found]

    def _remember(self, xs: np.ndarray, ts: np.ndarray) -> None:
        # Only the last warmup values are kept: do not convert the rest of a large batch.
        tail = max(0, len(xs) - self.warmup)
        start = max(0, len(self.recent_values) + len(xs) - tail - self.warmup)
        self.recent_values = np.concatenate([self.recent_values[start:], xs[tail:]])
        self.recent_times = np.concatenate([self.recent_times[start:], ts[tail:]])

    def _learn(self, xs: list[float]) -> None:
        self.baseline.extend(xs)
        if len(self.baseline) < self.warmup:
            return
        in_order = np.asarray(self.baseline)
        self.baseline = np.sort(in_order)
        pit = self._percentiles(in_order)
        usable = len(pit) - len(pit) % self.block
        for name, values in (("location", pit), ("spread", np.abs(pit - 0.5))):
            if name == "spread" and not self.spread:
                continue
            # Block means in arrival order: neighbours that move together widen their spread.
            means = values[:usable].reshape(-1, self.block).mean(axis=1)
            sd = max(float(means.std(ddof=1)), float(values.std()) / self.block**0.5, 1e-9)
            # The baseline is a sample too: its own mean is off by about this much.
            error = float(values.std()) / len(values) ** 0.5
            allowance = max(0.5 * sd, self.min_shift / 2) + 3 * error
            self.cusums[name] = TwoSidedCusum(float(values.mean()), sd, allowance, self.threshold * sd)

    def _percentiles(self, xs: np.ndarray) -> np.ndarray:
        return percentiles(np.asarray(self.baseline), xs)

    def _test(self, xs: np.ndarray, ts: np.ndarray) -> tuple[Finding | None, int]:
        """Run the CUSUMs over whole blocks of ``xs``; stop at the first change. Returns it and values used."""
        pit = self._percentiles(xs)
        b = self.block
        i = 0
        if self.partial:
            i = min(b - len(self.partial), len(pit))
            self.partial.extend(pit[:i].tolist())
            if len(self.partial) < b:
                return None, len(xs)
            block = np.asarray(self.partial)
            self.partial = []
            assert self.partial_start is not None
            end = float(ts[i - 1])
            found = self._step(float(block.mean()), float(np.abs(block - 0.5).mean()), self.partial_start, end)
            if found is not None:
                return found, i
        whole = (len(pit) - i) // b
        if whole:
            blocks = pit[i : i + whole * b].reshape(whole, b)
            means = {"location": blocks.mean(axis=1), "spread": np.abs(blocks - 0.5).mean(axis=1)}
            starts = ts[i : i + whole * b : b]
            k = 0
            while k < whole:
                if whole - k >= MIN_BLOCKS_AT_ONCE:
                    k += self._quiet_blocks(means, starts, k)
                    if k == whole:
                        break
                start, end = i + k * b, i + (k + 1) * b
                found = self._step(
                    float(means["location"][k]), float(means["spread"][k]), float(ts[start]), float(ts[end - 1])
                )
                if found is not None:
                    return found, end
                k += 1
            i += whole * b
        if i < len(pit):
            self.partial, self.partial_start = pit[i:].tolist(), float(ts[i])
        return None, len(xs)

    def _quiet_blocks(self, means: dict[str, np.ndarray], starts: np.ndarray, k: int) -> int:
        """Take in the blocks from ``k`` on up to the first that brings a CUSUM past its limit; return how many.

        Every CUSUM takes the same blocks, so that they stay in step; the
        block that crosses goes through :meth:`_step`, which decides what it means.
        """
        values = {name: means[name][k:] for name in self.cusums}
        sums = {name: cusum.sums_after(values[name]) for name, cusum in self.cusums.items()}
        quiet = min(cusum.quiet_blocks(sums[name]) for name, cusum in self.cusums.items())
        for name, cusum in self.cusums.items():
            cusum.take(values[name], starts[k:], sums[name], quiet)
        return quiet

    def _step(self, location: float, spread: float, start: float, end: float) -> Finding | None:
        """One block's means into the CUSUMs; the finding if one passed its limit."""
        means = {"location": location, "spread": spread}
        loc = self.cusums["location"]
        for name, cusum in self.cusums.items():
            side = cusum.step(means[name], start)
            if side is None:
                continue
            if name == "location" and self.direction not in ("both", side):
                cusum.sums[side] = 0.0
                continue
            if name == "spread" and max(loc.sums.values()) > loc.limit / 2:
                # Values moving off to one side also move away from the median: let
                # the location CUSUM, which says more, report that change.
                continue
            return self._finding(name, side, end)
        return None

    def _rebaseline(self, onset: float | None) -> None:
        since = self.recent_values if onset is None else self.recent_values[self.recent_times >= onset]
        self.baseline, self.cusums, self.partial = [], {}, []
        self.recent_values, self.recent_times = np.zeros(0), np.zeros(0)
        self._learn(since.tolist())

    def _finding(self, statistic: str, side: str, at: float) -> Finding:
        cusum = self.cusums[statistic]
        level = cusum.mean_since(side)
        onset = cusum.start[side]
        median = float(np.median(self.baseline))
        named = STATISTICS[statistic][0 if side == "up" else 1]
        if statistic == "location":
            what = (
                f"{self.signal} moved {named}: since the change its values sit on average at the "
                f"{100 * level:.0f}th percentile of the baseline ({self.warmup} values, median {median:.4g}), "
                f"where the {100 * cusum.center:.0f}th is expected"
            )
        else:
            what = (
                f"{self.signal} became {named}: since the change its values sit on average "
                f"{100 * level:.0f} percentile points from the baseline's median ({self.warmup} values, median "
                f"{median:.4g}), where {100 * cusum.center:.0f} are expected"
            )
        return Finding(
            signal=self.signal,
            detector=self.name,
            kind=self.kind,
            severity="critical" if abs(level - cusum.center) >= 0.25 else "warning",
            value=round(level, 6),
            threshold=self.threshold,
            baseline={"median": round(median, 6), "events": self.warmup, statistic: round(cusum.center, 6)},
            message=f"{what} (CUSUM {cusum.sums[side] / cusum.sd:.1f} block sd, limit {self.threshold:g}).",
            event_time=at,
            window=stream_window(at, self.window_s),
            evidence={
                "statistic": statistic,
                "direction": named,
                "level": round(level, 4),
                "blocks": cusum.blocks[side],
                "change_started_at": onset,
            },
            change_point=True,
        )

    def scores(self) -> dict[str, float]:
        """``shift_sd``: the largest CUSUM, in block standard deviations."""
        if not self.ready:
            return {}
        return {"shift_sd": max(max(c.sums.values()) / c.sd for c in self.cusums.values())}

    def to_dict(self) -> dict[str, Any]:
        """Plain, versioned state."""
        return {
            "state_version": STATE_VERSION,
            "baseline": np.array(self.baseline, dtype=np.float64),
            "cusums": {name: c.to_dict() for name, c in self.cusums.items()},
            "partial": list(self.partial),
            "partial_start": self.partial_start,
            "recent": np.column_stack([self.recent_values, self.recent_times]),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved; a state of another version is refused."""
        check_state_version(state, STATE_VERSION, "cusum")
        baseline = np.array(state["baseline"], dtype=np.float64)
        self.baseline = baseline if len(baseline) >= self.warmup else baseline.tolist()
        self.cusums = {name: TwoSidedCusum.from_dict(c) for name, c in state["cusums"].items()}
        self.partial = [float(v) for v in state["partial"]]
        self.partial_start = state["partial_start"]
        recent = np.asarray(state["recent"], dtype=np.float64).reshape(-1, 2)[-self.warmup :]
        self.recent_values, self.recent_times = recent[:, 0].copy(), recent[:, 1].copy()


def _blocks_together(
    rules: list[PercentileCusumRule],
    members: list[tuple[int, np.ndarray, np.ndarray]],
    block: int,
    partial: int,
    n: int,
    names: tuple[str, ...],
    found: list[list[Finding] | None],
) -> None:
    """Rules in step take ``n`` values each (see :meth:`PercentileCusumRule.update_together`); findings into ``found``.

    The same operations as each rule's own :meth:`~PercentileCusumRule._test`
    on its values, row by row, so the sums and states are the same to the
    bit; a rule whose CUSUM would cross is left untouched past the block it
    was completing, and takes the rest on its own.
    """
    head = -partial % block
    stepped: list[tuple[PercentileCusumRule, int, np.ndarray, np.ndarray, np.ndarray]] = []
    for rule, (at, xs, ts) in zip(rules, members, strict=True):
        pit = rule._percentiles(xs)
        if head:
            completed = np.asarray(rule.partial + pit[:head].tolist())
            location, spread = float(completed.mean()), float(np.abs(completed - 0.5).mean())
            means = {"location": location, "spread": spread}
            if any(cusum.would_cross(means[name]) for name, cusum in rule.cusums.items()):
                found[at] = rule.update(xs, ts)
                continue
            assert rule.partial_start is not None
            rule.partial = []
            rule._step(location, spread, rule.partial_start, float(ts[head - 1]))
        stepped.append((rule, at, xs, ts, pit))
    if not stepped:
        return
    whole = (n - head) // block
    used = head + whole * block
    blocks = np.stack([pit[head:used] for *_, pit in stepped]).reshape(len(stepped), whole, block)
    block_means = {"location": blocks.mean(axis=2), "spread": np.abs(blocks - 0.5).mean(axis=2)}
    # Which rules stay under their limits, and how each takes the blocks in (the same to the bit as alone).
    rows = _stepped if whole < MIN_BLOCKS_AT_ONCE else _summed
    quiet, take = rows([rule for rule, *_ in stepped], block_means, names)
    for row, (rule, at, xs, ts, pit) in enumerate(stepped):
        if not quiet[row]:
            rule._remember(xs[:head], ts[:head])
            found[at] = rule.update(xs[head:], ts[head:])
            continue
        take(row, rule, ts[head:used:block])
        if used < n:
            rule.partial, rule.partial_start = pit[used:].tolist(), float(ts[used])
        rule._remember(xs, ts)
        found[at] = []


RowTake = Callable[[int, PercentileCusumRule, np.ndarray], None]


def _stepped(
    rules: list[PercentileCusumRule], block_means: dict[str, np.ndarray], names: tuple[str, ...]
) -> tuple[list[bool], RowTake]:
    """Fewer blocks than :data:`MIN_BLOCKS_AT_ONCE`, stepped as each rule's :meth:`~PercentileCusumRule._step`
    would, every CUSUM a row: whether each rule stays under its limits, and how it takes the blocks in."""
    cusums = [rule.cusums[name] for rule in rules for name in names]
    after = step_together(cusums, np.stack([block_means[name] for name in names], axis=1).reshape(len(cusums), -1))
    quiet = (~after.crossed.reshape(len(rules), len(names)).any(axis=1)).tolist()

    def take(row: int, rule: PercentileCusumRule, starts: np.ndarray) -> None:
        for column, name in enumerate(names, start=row * len(names)):
            after.take(column, rule.cusums[name], starts)

    return quiet, take


def _summed(
    rules: list[PercentileCusumRule], block_means: dict[str, np.ndarray], names: tuple[str, ...]
) -> tuple[list[bool], RowTake]:
    """Many blocks, taken as running totals (:meth:`TwoSidedCusum.sums_after`), a row per rule: whether each
    rule stays under its limits, and how it takes the blocks in."""
    whole = block_means[names[0]].shape[1]
    quiet = np.full(len(rules), True)
    sums: dict[tuple[str, str], np.ndarray] = {}
    for name in names:
        cusums = [rule.cusums[name] for rule in rules]
        center = np.array([c.center for c in cusums])[:, None]
        allowance = np.array([c.allowance for c in cusums])[:, None]
        limit = np.array([c.limit for c in cusums])[:, None]
        z = block_means[name] - center
        for side, signed in (("up", z), ("down", -z)):
            running = np.array([c.sums[side] for c in cusums])[:, None] + np.cumsum(signed - allowance, axis=1)
            side_sums = sums[name, side] = running - np.minimum(np.minimum.accumulate(running, axis=1), 0.0)
            quiet &= ~(side_sums > limit).any(axis=1)
    # Where each side last started again from zero (TwoSidedCusum.take), a row per rule.
    last_restart = {
        key: (restarts.any(axis=1), whole - 1 - restarts[:, ::-1].argmax(axis=1))
        for key, restarts in ((key, side_sums[:, : whole - 1] <= 0) for key, side_sums in sums.items())
    }

    def take(row: int, rule: PercentileCusumRule, starts: np.ndarray) -> None:
        for name, cusum in rule.cusums.items():
            for side in ("up", "down"):
                restarted, last = last_restart[name, side]
                last_row = int(last[row]) if restarted[row] else None
                cusum.take_side(side, block_means[name][row], starts, whole, float(sums[name, side][row, -1]), last_row)

    return quiet.tolist(), take

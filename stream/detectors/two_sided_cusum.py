"""The tabular two-sided CUSUM of block means (Page 1954), one step or a run of blocks at once.

A side's sum after each block is ``max(0, sum + z - allowance)`` (``z``: the
block mean's distance from the centre, either way); a side past ``limit``
has moved. A run of blocks is taken with Lindley's form of that recursion
(a running total minus the lowest it has been), the same sums as step by step;
a few blocks of many CUSUMs are stepped together, an array per block.

References: E. S. Page, "Continuous inspection schemes", Biometrika 41
(1954); D. C. Montgomery, "Introduction to Statistical Quality Control", ch.
9 (tabular CUSUM).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class TwoSidedCusum:
    """Tabular CUSUM of block means around a baseline ``center``, in units of ``sd``.

    >>> c = TwoSidedCusum(center=0.5, sd=0.1, allowance=0.05, limit=1.0)
    >>> [c.step(0.5, float(t)) for t in range(3)]
    [None, None, None]
    >>> [c.step(0.9, float(t)) for t in range(3, 6)]
    [None, None, 'up']
    >>> c.start["up"], round(c.mean_since("up"), 2)
    (3.0, 0.9)
    """

    def __init__(self, center: float, sd: float, allowance: float, limit: float) -> None:
        self.center, self.sd, self.allowance, self.limit = center, sd, allowance, limit
        self.sums = {"up": 0.0, "down": 0.0}
        self.start: dict[str, float | None] = {"up": None, "down": None}
        self.total = {"up": 0.0, "down": 0.0}  # sum of block means since each side's start
        self.blocks = {"up": 0, "down": 0}

    def step(self, value: float, start: float) -> str | None:
        """Add one block mean (whose first value came at ``start``); return the side past the limit, if any."""
        z = value - self.center
        for side, signed in (("up", z), ("down", -z)):
            if self.sums[side] <= 0:
                self.start[side], self.total[side], self.blocks[side] = start, 0.0, 0
            self.sums[side] = max(0.0, self.sums[side] + signed - self.allowance)
            self.total[side] += value
            self.blocks[side] += 1
        for side in ("up", "down"):
            if self.sums[side] > self.limit:
                return side
        return None

    def would_cross(self, value: float) -> bool:
        """Whether :meth:`step` with this block mean would take a side past the limit (state unchanged)."""
        z = value - self.center
        return any(
            max(0.0, self.sums[side] + signed - self.allowance) > self.limit
            for side, signed in (("up", z), ("down", -z))
        )

    def sums_after(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Each side's sum after each block mean of ``values``, as :meth:`step` would leave it (state unchanged).

        The same recursion as :meth:`step` for a run of blocks at once: a
        side's sum after block k is its running total minus the lowest that
        total has been, or zero (Lindley's form of ``max(0, sum + z)``).
        """
        z = values - self.center
        out = {}
        for side, signed in (("up", z), ("down", -z)):
            running = self.sums[side] + np.cumsum(signed - self.allowance)
            out[side] = running - np.minimum(np.minimum.accumulate(running), 0.0)
        return out

    def quiet_blocks(self, sums: dict[str, np.ndarray]) -> int:
        """How many of the blocks behind ``sums`` (see :meth:`sums_after`) pass before one crosses the limit."""
        quiet = len(sums["up"])
        for side_sums in sums.values():
            over = np.flatnonzero(side_sums[:quiet] > self.limit)
            if over.size:
                quiet = int(over[0])
        return quiet

    def take(self, values: np.ndarray, starts: np.ndarray, sums: dict[str, np.ndarray], n: int) -> None:
        """Take in the first ``n`` block means of ``values`` (first values at ``starts``), none past the limit."""
        if not n:
            return
        for side, side_sums in sums.items():
            # A side starts again at each block it enters from zero: the last such block is its start.
            restarts = np.flatnonzero(side_sums[: n - 1] <= 0)
            last = int(restarts[-1]) + 1 if restarts.size else None
            self.take_side(side, values, starts, n, float(side_sums[n - 1]), last)

    def take_side(
        self, side: str, values: np.ndarray, starts: np.ndarray, n: int, sums_after: float, last_restart: int | None
    ) -> None:
        """One side takes in the first ``n`` block means of ``values``, after which its sum is ``sums_after``.

        ``last_restart``: the last of blocks 1 to n - 1 that the side entered from zero (None: none did);
        block 0 is entered from zero when the side stands at zero now.
        """
        first = last_restart if last_restart is not None else (0 if self.sums[side] <= 0 else None)
        if first is None:
            self.total[side] += float(values[:n].sum())
            self.blocks[side] += n
        else:
            self.start[side] = float(starts[first])
            self.total[side] = float(values[first:n].sum())
            self.blocks[side] = n - first
        self.sums[side] = sums_after

    def mean_since(self, side: str) -> float:
        """The mean of the block means since ``side`` last stood at zero."""
        return self.total[side] / max(self.blocks[side], 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain state."""
        return {
            "center": self.center,
            "sd": self.sd,
            "allowance": self.allowance,
            "limit": self.limit,
            "sums": dict(self.sums),
            "start": dict(self.start),
            "total": dict(self.total),
            "blocks": dict(self.blocks),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TwoSidedCusum:
        """Rebuild from :meth:`to_dict` output."""
        out = cls(float(state["center"]), float(state["sd"]), float(state["allowance"]), float(state["limit"]))
        out.sums = {k: float(v) for k, v in state["sums"].items()}
        out.start = {k: None if v is None else float(v) for k, v in state["start"].items()}
        out.total = {k: float(v) for k, v in state["total"].items()}
        out.blocks = {k: int(v) for k, v in state["blocks"].items()}
        return out


@dataclass
class SteppedTogether:
    """What :meth:`TwoSidedCusum.step` would leave in each of several CUSUMs after a few blocks each.

    Lists of two rows (the up and down sides) and a column per CUSUM; see :func:`step_together`.
    """

    sums: list[list[float]]
    restarted_at: list[list[int]]  # the last block a side entered from zero, or -1
    total: list[list[float]]
    blocks: list[list[int]]
    crossed: np.ndarray  # per CUSUM: whether a side passed its limit at some block

    def take(self, column: int, cusum: TwoSidedCusum, starts: Sequence[float]) -> None:
        """Leave ``cusum`` (the one of ``column``) as its steps would, the blocks' first values at ``starts``."""
        for row, side in enumerate(("up", "down")):
            cusum.sums[side] = self.sums[row][column]
            restarted = self.restarted_at[row][column]
            if restarted >= 0:
                cusum.start[side] = float(starts[restarted])
            cusum.total[side] = self.total[row][column]
            cusum.blocks[side] = self.blocks[row][column]


_SIDES = np.array([[1.0], [-1.0]])


def step_together(cusums: Sequence[TwoSidedCusum], values: np.ndarray) -> SteppedTogether:
    """:meth:`TwoSidedCusum.step` of each block mean of ``values`` (a row per CUSUM), the CUSUMs left unchanged.

    The same operations as stepping, in the same order, a numpy call per
    block for all the CUSUMs' sides: the sums are those of :meth:`step` to
    the bit, which :meth:`sums_after`'s running totals are not. For a few
    blocks of many CUSUMs (a model's signals), where taking each CUSUM's
    blocks at once would cost more than stepping them.

    >>> a, b = (TwoSidedCusum(center=0.5, sd=0.1, allowance=0.05, limit=1.0) for _ in range(2))
    >>> stepped = step_together([a, b], np.array([[0.5, 0.6, 0.7], [0.9, 0.9, 0.9]]))
    >>> stepped.crossed.tolist()
    [False, True]
    >>> one = TwoSidedCusum(center=0.5, sd=0.1, allowance=0.05, limit=1.0)
    >>> [one.step(v, 0.0) for v in (0.5, 0.6, 0.7)]
    [None, None, None]
    >>> stepped.take(0, a, starts=[0.0, 0.0, 0.0])
    >>> a.to_dict() == one.to_dict()
    True
    """
    center = np.array([c.center for c in cusums])
    allowance = np.array([c.allowance for c in cusums])
    limit = np.array([c.limit for c in cusums])
    sides = ("up", "down")
    sums = np.array([[c.sums[side] for c in cusums] for side in sides])
    total = np.array([[c.total[side] for c in cusums] for side in sides])
    blocks = np.array([[c.blocks[side] for c in cusums] for side in sides])
    restarted_at = np.full(sums.shape, -1)
    crossed = np.zeros(sums.shape, dtype=bool)
    for k in range(values.shape[1]):
        value = values[:, k]
        restart = sums <= 0
        restarted_at[restart] = k
        total = np.where(restart, 0.0, total) + value
        blocks = np.where(restart, 0, blocks) + 1
        # max(0.0, sum + signed - allowance) as step computes it (a NaN or -0.0 becomes 0.0 there too).
        after = sums + _SIDES * (value - center) - allowance
        sums = np.where(after > 0.0, after, 0.0)
        crossed |= sums > limit
    return SteppedTogether(sums.tolist(), restarted_at.tolist(), total.tolist(), blocks.tolist(), crossed.any(axis=0))

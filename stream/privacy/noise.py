"""Differentially private window counts of small slices (segments): discrete Laplace noise from OpenDP.

For users who must not publish exact per-segment figures. A slice's window
counts (its events and its errors) are released with discrete Laplace noise
of scale ``2 / epsilon_per_window``: one event more or less changes each count
by at most 1, so the pair costs ``epsilon_per_window`` (event-level
differential privacy; OpenDP's own privacy map states the cost). A slice's
release for one window is drawn once and kept, so reading it again costs
nothing; each slice may spend ``budget_per_day`` a day, after which it is
suppressed until the next day (UTC).

The budget lives in the worker's memory: a restarted worker, or the worker
that takes a model over after a rebalance, starts a fresh one.

Reference: C. Dwork, F. McSherry, K. Nissim and A. Smith, "Calibrating noise
to sensitivity in private data analysis", TCC 2006; C. Canonne, G. Kamath
and T. Steinke, "The discrete Gaussian for differential privacy", NeurIPS 2020
(discrete Laplace); the OpenDP library, https://opendp.org.
"""

from __future__ import annotations

import math
from typing import Any

DAY_S = 86_400.0
# Releases remembered per slice: the current window's and a few before, for readers a little behind.
KEPT_RELEASES = 4


class SliceNoise:
    """Noisy (events, errors) per slice and window, within an epsilon budget per slice per day.

    >>> noise = SliceNoise(epsilon_per_window=1.0, budget_per_day=2.0)
    >>> first = noise.release("eu", 0.0, events=500, errors=10)
    >>> noise.release("eu", 0.0, events=500, errors=10) == first     # the same window: drawn once
    True
    >>> abs(first["events"] - 500) < 60, noise.spent("eu", 0.0)
    (True, 1.0)
    >>> noise.release("eu", 60.0, events=480, errors=9) is not None, noise.spent("eu", 60.0)
    (True, 2.0)
    >>> noise.release("eu", 120.0, events=470, errors=9) is None     # the day's budget is spent
    True
    """

    def __init__(self, epsilon_per_window: float, budget_per_day: float) -> None:
        if not epsilon_per_window > 0 or not budget_per_day >= epsilon_per_window:
            raise ValueError("epsilon_per_window must be above 0 and at most budget_per_day")
        self.epsilon_per_window = epsilon_per_window
        self.budget_per_day = budget_per_day
        self.scale = 2.0 / epsilon_per_window
        # Imported here: OpenDP is a large import, and most workers publish exact figures.
        import opendp.prelude as dp

        dp.enable_features("contrib")
        self._laplace = dp.m.make_laplace(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=self.scale)
        # One event changes each of the two counts by at most 1: the pair's cost, by OpenDP's own map.
        self.cost = 2 * self._laplace.map(1)
        self._releases: dict[str, dict[float, dict[str, int]]] = {}
        self._spent: dict[tuple[str, int], float] = {}

    def spent(self, key: str, window_start: float) -> float:
        """Epsilon ``key`` has spent on the day of ``window_start``."""
        return self._spent.get((key, _day(window_start)), 0.0)

    def release(self, key: str, window_start: float, *, events: int, errors: int) -> dict[str, int] | None:
        """The noisy counts of ``key``'s window at ``window_start``; None once the day's budget is spent."""
        kept = self._releases.setdefault(key, {})
        if window_start in kept:
            return kept[window_start]
        day = (key, _day(window_start))
        if self._spent.get(day, 0.0) + self.cost > self.budget_per_day + 1e-9:
            return None
        self._spent[day] = self._spent.get(day, 0.0) + self.cost
        noisy_events = max(0, int(self._laplace(int(events))))
        out = {"events": noisy_events, "errors": min(noisy_events, max(0, int(self._laplace(int(errors)))))}
        kept[window_start] = out
        for old in sorted(kept)[:-KEPT_RELEASES]:
            del kept[old]
        return out

    def describe(self) -> dict[str, Any]:
        """What is promised, for the pages that show noisy figures."""
        return {
            "mechanism": "discrete Laplace (OpenDP)",
            "unit": "event",
            "epsilon_per_window": self.epsilon_per_window,
            "budget_per_day": self.budget_per_day,
            "scale": self.scale,
        }


def private_segments(segments: dict[str, Any], key: str, noise: SliceNoise | None) -> dict[str, Any]:
    """A version's segments summary as it may leave the worker: as it is, or with noisy counts only.

    With noise, a segment keeps its noisy events and error rate and what
    fires; every other figure (latency, confidence, predictions, accuracy,
    usual levels) is withheld, since it is not protected by the noise.
    """
    if noise is None:
        return segments
    out: dict[str, Any] = {}
    for name, segment in segments.items():
        if segment.get("suppressed"):
            out[name] = segment
            continue
        window = segment["window"]
        errors = round(window["error_rate"] * window["count"]) if window["count"] else 0
        released = noise.release(f"{key}/{name}", window["start"], events=window["count"], errors=errors)
        if released is None:
            out[name] = {"suppressed": True, "reason": "privacy budget of the day spent"}
            continue
        out[name] = {
            "noisy": True,
            "window": {
                "start": window["start"],
                "end": window["end"],
                "count": released["events"],
                "error_rate": released["errors"] / released["events"] if released["events"] else 0.0,
            },
            "firing": segment["firing"],
        }
    return out


def _day(ts: float) -> int:
    return math.floor(ts / DAY_S)

"""Silence: a model that had traffic and went quiet, by the wall clock.

Every other detector reads event time, and with no events it sees nothing:
a model that stops serving would keep its last figures and its firing
alerts for ever. This one asks whether records still *arrive*. It learns the
longest gap between arrivals over the last day (two half-day buckets, so
that a nightly lull or a batch job's pause is known) and fires when the
current gap exceeds ``factor`` times that, and at least ``min_silence_s``;
or, configured, when it exceeds ``after_s``. It learns only after
``min_arrivals`` arrivals spread over ``min_history_s``. While the model is
silent each check repeats the finding (the alert lifecycle folds repeats);
once records arrive it stops, and the alert resolves.
"""

from __future__ import annotations

import time
from typing import Any

from stream.detectors.base import Finding, check_state_version

STATE_VERSION = 1
HALF_DAY_S = 43_200.0


class SilenceRule:
    """No record of a model for longer than its own quiet spells allow.

    >>> rule = SilenceRule(min_silence_s=60.0, min_arrivals=5, min_history_s=10.0)
    >>> for t in range(0, 100, 5):      # a record every 5 s
    ...     rule.arrived(float(t), "1")
    >>> rule.threshold()
    60.0
    >>> rule.check(130.0)             # 35 s of quiet: nothing
    []
    >>> [f.detector for f in rule.check(200.0)]   # 105 s: silent
    ['silence']
    >>> rule.arrived(201.0, "1"); rule.check(202.0)
    []
    """

    name = "silence"

    def __init__(
        self,
        *,
        after_s: float = 0.0,
        min_silence_s: float = 120.0,
        factor: float = 3.0,
        min_arrivals: int = 20,
        min_history_s: float = 600.0,
    ) -> None:
        self.after_s = after_s
        self.min_silence_s = min_silence_s
        self.factor = factor
        self.min_arrivals = min_arrivals
        self.min_history_s = min_history_s
        self.first_arrival: float | None = None
        self.last_arrival: float | None = None
        self.last_version: str | None = None
        self.arrivals = 0
        # [start, longest gap] of the current and the previous half day.
        self.buckets: list[list[float]] = []

    def arrived(self, now: float, version: str) -> None:
        """Records of ``version`` arrived at wall-clock ``now``."""
        if self.last_arrival is not None and now > self.last_arrival:
            self._note_gap(now, now - self.last_arrival)
        if self.first_arrival is None:
            self.first_arrival = now
        self.last_arrival = max(now, self.last_arrival or now)
        self.last_version = version
        self.arrivals += 1

    def _note_gap(self, now: float, gap: float) -> None:
        if not self.buckets or now - self.buckets[-1][0] >= HALF_DAY_S:
            self.buckets = [*self.buckets[-1:], [now, 0.0]]
        self.buckets[-1][1] = max(self.buckets[-1][1], gap)

    def threshold(self) -> float | None:
        """Seconds of quiet that make a silence (None: not learnt yet and none configured)."""
        if self.after_s:
            return self.after_s
        if self.first_arrival is None or self.last_arrival is None:
            return None
        if self.arrivals < self.min_arrivals or self.last_arrival - self.first_arrival < self.min_history_s:
            return None
        return max(self.min_silence_s, self.factor * self._longest_gap())

    def _longest_gap(self) -> float:
        return max((gap for _, gap in self.buckets), default=0.0)

    def quiet_s(self, now: float) -> float | None:
        """Seconds since the last record arrived (None before the first)."""
        return None if self.last_arrival is None else max(now - self.last_arrival, 0.0)

    def silent(self, now: float) -> bool:
        """Whether the model has been quiet past its threshold at ``now``."""
        limit, quiet = self.threshold(), self.quiet_s(now)
        return limit is not None and quiet is not None and quiet >= limit

    def check(self, now: float) -> list[Finding]:
        """A finding while the model has been quiet past its threshold."""
        if not self.silent(now):
            return []
        assert self.last_arrival is not None
        limit, quiet = self.threshold() or 0.0, now - self.last_arrival
        learnt = not self.after_s
        longest = self._longest_gap()
        return [
            Finding(
                signal="traffic",
                detector=self.name,
                kind="traffic",
                severity="critical",
                value=round(quiet, 1),
                threshold=round(limit, 1),
                baseline={"longest_gap_s": round(longest, 1), "arrivals": self.arrivals} if learnt else {},
                message=(
                    f"no records for {quiet:.0f} s (last at {_clock(self.last_arrival)} UTC); "
                    + (
                        f"the longest quiet spell of the last day was {longest:.0f} s, so {limit:.0f} s is silence. "
                        if learnt
                        else f"silence is configured as {limit:.0f} s. "
                    )
                    + "Check that the service still runs and still publishes, and the producer's connection to Kafka."
                ),
                event_time=now,
                window={"type": "sliding", "start": self.last_arrival, "end": now},
                evidence={"last_arrival": self.last_arrival, "quiet_s": round(quiet, 1)},
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain, versioned state."""
        return {
            "state_version": STATE_VERSION,
            "first_arrival": self.first_arrival,
            "last_arrival": self.last_arrival,
            "last_version": self.last_version,
            "arrivals": self.arrivals,
            "buckets": [list(b) for b in self.buckets],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        check_state_version(state, STATE_VERSION, self.name)
        self.first_arrival, self.last_arrival = state["first_arrival"], state["last_arrival"]
        self.last_version, self.arrivals = state["last_version"], state["arrivals"]
        self.buckets = [list(b) for b in state["buckets"]]


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))

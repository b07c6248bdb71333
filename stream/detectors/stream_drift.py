"""Drift on the event stream itself, with river's detectors.

ADWIN (adaptive windowing), Page-Hinkley and KSWIN watch one value per event
(1/0 for errors, the confidence, the latency) and say when its distribution
changed, without any reference profile.

River's detectors keep their statistics in private fields, so the state
holds no river object: it holds the detector's parameters and the inputs it
was fed since its last detection (at most ``REPLAY`` of them, and after an
ADWIN detection the ones its new window kept), and a restored rule builds
the detector again by feeding them. For ADWIN on a signal that has not
changed for more than ``REPLAY`` values, and for KSWIN's random sampling,
the rebuilt detector is close to the original, not identical.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.detectors.base import Finding, check_state_version, percentiles, plain_series, stream_window
from stream.detectors.lean_imports import ADWIN, PageHinkley, kswin

# River's detector class of each method. KSWIN's comes with scipy.stats, loaded only for a rule that uses it.
METHODS = {"adwin": lambda: ADWIN, "page_hinkley": lambda: PageHinkley, "kswin": kswin}
TIME_STRIDE = 32
TIME_MARKS = 512
REPLAY = 5000
STATE_VERSION = 2


class StreamDriftRule:
    """One river drift detector on one per-event signal.

    ``direction`` keeps only the changes that matter: ``up`` for error rates
    (fewer errors is no incident), ``down`` for accuracy, ``both`` otherwise.

    >>> rule = StreamDriftRule("error_rate", "adwin", direction="up", window_s=60)
    >>> quiet = rule.update([0.0] * 3000, [i * 0.01 for i in range(3000)])
    >>> found = rule.update([1.0] * 200, [30.0 + i * 0.01 for i in range(200)])
    >>> quiet, found[0].detector, found[0].evidence["before"] < found[0].evidence["after"]
    ([], 'adwin', True)
    """

    def __init__(
        self,
        signal: str,
        method: str = "adwin",
        *,
        direction: str = "both",
        warmup: int = 100,
        window_s: float = 60.0,
        kind: str = "drift",
        standardize: bool | None = None,
        **params: Any,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
        if direction not in ("up", "down", "both"):
            raise ValueError("direction must be up, down or both")
        if method == "adwin":
            params.setdefault("delta", 1e-4)
        elif method == "kswin":
            # river's defaults (alpha 0.005 on 30 of 100 values) test every event: about a dozen
            # false alarms per 10,000. A lower alpha on larger samples keeps a 1-sd shift in reach.
            # A fixed seed: KSWIN samples at random, and a replay after a crash should decide as the first run did.
            for key, value in (("alpha", 1e-5), ("window_size", 500), ("stat_size", 150), ("seed", 7)):
                params.setdefault(key, value)
        elif method == "page_hinkley":
            # In standard deviations (see below); river's own defaults alarm every few thousand events.
            for key, value in (("min_instances", 300), ("delta", 0.25), ("threshold", 50.0)):
                params.setdefault(key, value)
        self.signal = signal
        self.method = method
        self.name = method
        self.direction = direction
        self.warmup = warmup
        self.window_s = window_s
        self.kind = kind
        self.params = params
        self.detector = METHODS[method]()(**params)
        self.seen = 0
        # ADWIN's bound assumes values in [0, 1]: it sees percentiles of the
        # warm-up (see _learn_scale). Page-Hinkley's threshold is in the signal's
        # units: it sees values in standard deviations of the warm-up, so one
        # setting fits latencies, amounts and ages alike.
        if standardize is None:
            standardize = method in ("adwin", "page_hinkley")
        self.standardize = standardize
        self.scale: tuple[float, float] | None = None
        self.pit_reference: list[float] = []  # the warm-up, sorted: ADWIN's values become percentiles of it
        self.warmup_values: list[float] = []
        self.mean = 0.0  # running mean since the last change, to tell the direction
        self.count_since_change = 0
        # (event number, event time) every TIME_STRIDE events: enough to date the
        # start of a new regime some thousands of events back, in little state.
        self.times: deque[tuple[int, float]] = deque(maxlen=TIME_MARKS)
        self.recent: deque[float] = deque(maxlen=64)
        # What the river detector was fed since its last detection: enough to build it again.
        # Doubles in an array: a deque of Python floats took four times the memory.
        self.replay = array("d")

    def update(self, values: Sequence[float], timestamps: Sequence[float]) -> list[Finding]:
        """Feed values with their event timestamps; return a finding per detected change.

        Only the river detector sees values one at a time; the running mean,
        the recent values and the time marks are kept up per stretch of values
        between two detections.
        """
        xs, ts = plain_series(values, timestamps)
        findings: list[Finding] = []
        i = 0
        while i < len(xs) and self.standardize and self.scale is None:
            # Still learning the scale: these values only teach it.
            self._learn_scale(xs[i])
            self._account(xs, ts, i, i + 1)
            i += 1
        if i == len(xs):
            return findings
        if self.pit_reference:
            inputs = percentiles(np.asarray(self.pit_reference), np.asarray(xs[i:])).tolist()
        elif self.scale is not None:
            mu, sd = self.scale
            inputs = ((np.asarray(xs[i:]) - mu) / sd).tolist()
        else:
            inputs = xs[i:]
        detector, update = self.detector, self.detector.update
        start = i
        fed = 0  # inputs[:fed] are in self.replay
        for j, z in enumerate(inputs, i):
            update(z)
            if not detector.drift_detected or self.seen + (j - start + 1) < self.warmup:
                continue
            self._remember(inputs[fed : j - i + 1])
            fed = j - i + 1
            kept = self._new_regime_length() if self.method == "adwin" else 0
            self.replay = self.replay[-kept:] if kept else array("d")
            self._account(xs, ts, start, j)
            before = self.mean
            self._account(xs, ts, j, j + 1)
            start = j + 1
            width = self._new_regime_length()
            # The detector's own estimate still mixes old values right after the cut;
            # the last few values tell which way the signal moved.
            k = min(len(self.recent), max(width, 16))
            after = sum(list(self.recent)[-k:]) / k
            self.mean, self.count_since_change = after, max(width, 1)
            rising = after > before
            if (self.direction == "up" and not rising) or (self.direction == "down" and rising):
                continue
            findings.append(self._finding(ts[j], before, after, width))
        self._remember(inputs[fed:])
        self._account(xs, ts, start, len(xs))
        return findings

    def _remember(self, inputs: Sequence[float]) -> None:
        """Keep ``inputs`` for the replay, the last ``REPLAY`` values at most."""
        self.replay.extend(inputs)
        if len(self.replay) > REPLAY:
            del self.replay[: len(self.replay) - REPLAY]

    def _account(self, xs: list[float], ts: list[float], a: int, b: int) -> None:
        """Count ``xs[a:b]`` in the event number, time marks, recent values and running mean."""
        m = b - a
        if m <= 0:
            return
        seen = self.seen
        first_mark = (seen // TIME_STRIDE + 1) * TIME_STRIDE
        for number in range(first_mark, seen + m + 1, TIME_STRIDE):
            self.times.append((number, ts[a + number - seen - 1]))
        self.seen = seen + m
        self.recent.extend(xs[max(a, b - self.recent.maxlen) : b])
        total = self.count_since_change + m
        self.mean += (sum(xs[a:b]) - m * self.mean) / total
        self.count_since_change = total

    def _new_regime_length(self) -> int:
        width = getattr(self.detector, "width", None)
        return int(width) if width else 0

    def _learn_scale(self, x: float) -> None:
        self.warmup_values.append(x)
        if len(self.warmup_values) < self.warmup:
            return
        values = self.warmup_values
        if set(values) <= {0.0, 1.0}:
            # A 0/1 signal (errors) is already on the scale ADWIN expects.
            self.scale = (0.0, 1.0)
        else:
            mu = sum(values) / len(values)
            var = sum((v - mu) ** 2 for v in values) / (len(values) - 1)
            self.scale = (mu, max(var**0.5, 1e-9))
            if self.method == "adwin":
                # ADWIN's bound holds for values in [0, 1]: it sees each value's percentile
                # among the warm-up's, whatever the signal's range or tails.
                self.pit_reference = sorted(values)
        self.warmup_values = []

    def _finding(self, ts: float, before: float, after: float, width: int) -> Finding:
        started = self._time_of(self.seen - width) if width > 0 else None
        change = "rose" if after > before else "fell"
        return Finding(
            signal=self.signal,
            detector=self.method,
            kind=self.kind,
            severity="critical" if abs(after - before) >= max(0.1, abs(before)) else "warning",
            value=round(after, 6),
            threshold=self.params.get("delta", self.params.get("threshold", self.params.get("alpha"))),
            baseline={"mean": round(before, 6), "events": self.seen},
            message=(
                f"{self.signal} {change} from {before:.4g} to {after:.4g} "
                f"({self.method} detected a change after {self.seen} events"
                + (f"; the new level covers the last {width} events)." if width else ").")
            ),
            event_time=ts,
            window=stream_window(ts, self.window_s),
            evidence={"before": before, "after": after, "new_regime_events": width, "change_started_at": started},
            change_point=True,
        )

    def _time_of(self, event_number: int) -> float | None:
        """Event time of about the ``event_number``-th event, from the marks."""
        for number, ts in self.times:
            if number >= event_number:
                return ts
        return None

    def scores(self) -> dict[str, float]:
        """``shift_sd``: the mean since the last change, in standard deviations from the warm-up mean.

        >>> rule = StreamDriftRule("x", "adwin", warmup=4)
        >>> _ = rule.update([1.0, 3.0, 1.0, 3.0, 4.0], [0, 1, 2, 3, 4])   # warm-up mean 2, sd 1.15
        >>> round(rule.scores()["shift_sd"], 2)   # the mean of all five, 2.4, is 0.35 sd above it
        0.35
        """
        if self.scale is None or self.scale == (0.0, 1.0):
            return {}  # not learnt yet, or a 0/1 signal: its rate is exported as such
        mu, sd = self.scale
        return {"shift_sd": (self.mean - mu) / sd}

    def to_dict(self) -> dict[str, Any]:
        """Plain, versioned state: no river object, the inputs to build one again."""
        return {
            "state_version": STATE_VERSION,
            "method": self.method,
            "params": dict(self.params),
            "replay": np.array(self.replay, dtype=np.float64),
            "seen": self.seen,
            "mean": self.mean,
            "count_since_change": self.count_since_change,
            "times": list(self.times),
            "scale": self.scale,
            "pit_reference": list(self.pit_reference),
            "recent": list(self.recent),
            "warmup_values": self.warmup_values,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved; a state of another version is refused."""
        check_state_version(state, STATE_VERSION, self.method)
        if state["method"] != self.method or state["params"] != self.params:
            # Configured otherwise since: start the detector afresh rather than mix settings.
            replay: list[float] = []
        else:
            replay = np.asarray(state["replay"], dtype=np.float64).tolist()
        self.detector = METHODS[self.method]()(**self.params)
        for z in replay:
            self.detector.update(z)
        self.replay = array("d", replay[-REPLAY:])
        self.seen, self.mean = state["seen"], state["mean"]
        self.count_since_change = state["count_since_change"]
        self.times = deque((tuple(mark) for mark in state["times"]), maxlen=TIME_MARKS)
        self.scale = tuple(state["scale"]) if state["scale"] else None
        self.pit_reference = list(state["pit_reference"])
        self.warmup_values = list(state["warmup_values"])
        self.recent = deque(state["recent"], maxlen=64)

"""What a detector reports (a finding, before it becomes an alert), and the four kinds of detector.

A version's monitor drives every detector through one of these protocols:

- :class:`SignalDetector`: one signal's values with their event times (latency,
  a feature, ...), as the monitor file names them; custom detectors are these;
- :class:`BatchDetector`: whole events, for what spans fields (private data in
  text, client abuse, host resources);
- :class:`WindowDetector`: the tumbling window as it fills, against the
  version's reference (data quality, reference drift, multivariate);
- :class:`LabelDetector`: labelled predictions, when labels arrive.

Each keeps its state as plain, versioned JSON data (``to_dict`` and
``load_state``, which refuses a state version it does not know).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from stream.stats.window_stats import window_start

if TYPE_CHECKING:
    from stream.stats.columns import BatchColumns
    from stream.stats.window_stats import WindowStats


def tumbling_window(start: float, size_s: float) -> dict[str, Any]:
    """The ``window`` field of a finding made in the tumbling window starting at ``start``.

    >>> tumbling_window(60.0, 60.0)
    {'type': 'tumbling', 'start': 60.0, 'end': 120.0, 'size_s': 60.0}
    """
    return {"type": "tumbling", "start": start, "end": start + size_s, "size_s": size_s}


def stream_window(event_time: float, size_s: float) -> dict[str, Any]:
    """The ``window`` field of a stream detector's finding: the window of ``size_s`` holding ``event_time``.

    >>> stream_window(75.0, 60.0)
    {'type': 'stream', 'start': 60.0, 'end': 120.0, 'size_s': 60.0}
    """
    start = window_start(event_time, size_s)
    return {"type": "stream", "start": start, "end": start + size_s, "size_s": size_s}


def right_skewed(minimum: float, mean: float, median: float) -> bool:
    """Whether a signal is positive and skewed to the right (mean above 1.25 times the median): compare it as logs.

    >>> right_skewed(0.5, 30.0, 20.0), right_skewed(0.5, 21.0, 20.0), right_skewed(-1.0, 30.0, 20.0)
    (True, False, False)
    """
    return bool(minimum > 0 and median > 0 and mean > 1.25 * median)


def percentiles(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each value's mid-rank percentile among ``reference`` (sorted): the probability integral transform.

    In [0, 1], 0.5 on average while the values come from the reference's distribution, whatever its shape.

    >>> percentiles(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 2.0, 9.0])).tolist()
    [0.0, 0.375, 1.0]
    """
    values = np.asarray(values)
    right = np.searchsorted(reference, values, "right")
    if not reference.size or np.isnan(reference[-1]):  # NaN sorts last: equality cannot find its ties
        return (np.searchsorted(reference, values, "left") + right) / (2.0 * len(reference))
    # A value's left and right ranks differ only where it equals a reference value, the one just
    # before its right rank; continuous signals seldom do, so the second search is mostly skipped.
    # (At a right rank of 0 this compares with the largest value, which cannot be equal.)
    tied = reference[right - 1] == values
    if not tied.any():
        return right / float(len(reference))
    left = right.copy()
    left[tied] = np.searchsorted(reference, values[tied], "left")
    return (left + right) / (2.0 * len(reference))


def row_medians(rows: np.ndarray, finite: bool = False) -> np.ndarray:
    """The median of each row of a 2-D array: ``np.median(rows, axis=1)``, without its per-call overhead.

    The stream detectors take medians of a few hundred short windows per batch,
    where numpy's general median spends most of its time checking its
    arguments; one sort of the rows does the same work. (Not a partition at
    the middle, as numpy's median does: timed inside the level-shift rule, a
    partition of even rows cost several times a sort; docs/perf/history.md
    has the figures.) Rows holding NaN or infinities go to ``np.median``,
    so the answer is the same in every case; ``finite`` says the caller has
    checked there are none.

    >>> row_medians(np.array([[3.0, 1.0, 2.0], [5.0, 4.0, 9.0]])).tolist()
    [2.0, 5.0]
    >>> row_medians(np.array([[4.0, 1.0, 3.0, 2.0]])).tolist()
    [2.5]
    """
    n = rows.shape[1]
    if n == 0 or not (finite or np.isfinite(rows).all()):
        return np.median(rows, axis=1)
    k = n // 2
    ordered = np.sort(rows, axis=1)
    if n % 2:
        return ordered[:, k]
    return (ordered[:, k - 1] + ordered[:, k]) / 2


def float_series(values: Sequence[float], timestamps: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Values and timestamps as float64 arrays (no copy of arrays that are already), of equal length.

    >>> float_series([1, 2], [0.5, 0.6])
    (array([1., 2.]), array([0.5, 0.6]))
    """
    xs = np.asarray(values, dtype=np.float64)
    ts = np.asarray(timestamps, dtype=np.float64)
    if len(xs) != len(ts):
        raise ValueError(f"{len(xs)} values but {len(ts)} timestamps")
    return xs, ts


def plain_series(values: Sequence[float], timestamps: Sequence[float]) -> tuple[list[float], list[float]]:
    """Values and timestamps as plain floats (numpy scalars must not leak into JSON state), of equal length.

    >>> plain_series([1, 2], [0.5, 0.6])
    ([1.0, 2.0], [0.5, 0.6])
    """
    xs, ts = float_series(values, timestamps)
    return xs.tolist(), ts.tolist()


class WindowCheckpoints:
    """The counts at which a growing tumbling window is tested, and the significance each test may spend.

    A window is tested at ``min_events`` and then each time it has grown by a
    quarter (and by at least ``min_events``). The j-th test of a window may
    spend ``6 alpha / (pi^2 j^2)``: these sum to ``alpha``, so however often a
    window is re-tested its false-alarm rate stays within ``alpha``. A caller
    that ends its batches where :meth:`events_until_due` says tests at the same
    counts whatever the batching, so a replay decides, and names its alerts, alike.

    >>> c = WindowCheckpoints(200)
    >>> c.events_until_due(60.0, 150), c.reached(60.0, 150), c.reached(60.0, 200), c.events_until_due(60.0, 200)
    (50, False, True, 200)
    >>> round(c.level(0.001), 6), c.reached(120.0, 10)   # a new window starts the schedule again
    (0.000608, False)
    """

    __slots__ = ("checked_at", "min_events", "tests", "window_start")

    def __init__(self, min_events: int) -> None:
        self.min_events = min_events
        self.window_start: float | None = None
        self.checked_at = 0  # the window's count at its last test
        self.tests = 0  # tests made in this window

    def new_window(self, window_start: float) -> bool:
        """Start the schedule again if ``window_start`` is a window not seen yet; say whether it is."""
        if window_start == self.window_start:
            return False
        self.window_start, self.checked_at, self.tests = window_start, 0, 0
        return True

    def _due(self) -> int:
        return self.checked_at + max(self.min_events, self.checked_at // 4) if self.checked_at else self.min_events

    def events_until_due(self, window_start: float, count: int) -> int:
        """Events the window starting at ``window_start`` (holding ``count``) takes before its next test."""
        due = self.min_events if window_start != self.window_start else self._due()
        return max(due - count, 1)

    def reached(self, window_start: float, count: int) -> bool:
        """Whether a window holding ``count`` events is due a test now; if so the test is counted."""
        self.new_window(window_start)
        if count < self._due():
            return False
        self.checked_at = count
        self.tests += 1
        return True

    def level(self, alpha: float) -> float:
        """The significance the current test may spend out of ``alpha``."""
        return alpha * 6 / (math.pi**2 * max(self.tests, 1) ** 2)

    def to_dict(self) -> dict[str, Any]:
        """Plain state."""
        return {"window_start": self.window_start, "checked_at": self.checked_at, "tests": self.tests}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        self.window_start, self.checked_at, self.tests = state["window_start"], state["checked_at"], state["tests"]


def check_state_version(state: dict[str, Any], expected: int, detector: str) -> None:
    """Refuse a detector state of another layout with ``ValueError`` (the model then starts afresh, with an alert).

    A state without ``state_version`` has the first layout, written before states carried one.

    >>> check_state_version({"seen": 3}, 1, "zscore")
    >>> check_state_version({"state_version": 3}, 2, "cusum")
    Traceback (most recent call last):
    ...
    ValueError: cusum state version 3, expected 2
    """
    found = state.get("state_version", 1)
    if found != expected:
        raise ValueError(f"{detector} state version {found!r}, expected {expected}")


@dataclass(slots=True)
class Finding:
    """A detector's verdict on a signal: the value, the baseline, the reason.

    ``stream.contracts.alert_messages`` turns a finding into an alert message by adding the
    model, version, fingerprint and ids.
    """

    signal: str
    detector: str
    kind: str
    severity: str
    value: float | None
    threshold: float | None
    baseline: dict[str, Any]
    message: str
    event_time: float
    window: dict[str, Any]
    evidence: dict[str, Any] = field(default_factory=dict)
    # A change point the detector has re-baselined after (each change reported once, from
    # evidence["change_started_at"]): news even within the alert cooldown. Per-window outlier
    # counts are not: a spike that runs into the next window is the same incident.
    change_point: bool = False
    # Where an on-call engineer should look first, when the detector knows better than the
    # alert's kind and signal do (``stream.contracts.alert_messages.where_to_look`` otherwise).
    where_to_look: str = ""


@runtime_checkable
class SignalDetector(Protocol):
    """A detector fed one signal's values with their event times, as the monitor file names them.

    Built as ``Class(signal, window_s=..., **params)``. ``update`` takes
    the values and times as lists of floats (the built-in detectors are
    given float64 arrays, which they take as they are), returns a
    finding per detection and must decide the same whatever the batching;
    ``to_dict`` returns plain JSON data (never pickle) that ``load_state``
    restores, refusing a state version it does not know with ``ValueError``.
    An optional ``scores()`` returns figures for the Prometheus exporter.
    An optional static ``update_together(rules, series)`` takes several
    rules of the class at once (``series``: each rule's values and
    timestamps) and returns each rule's findings, the same findings and
    states as each rule's ``update`` (see :func:`update_rules`).
    """

    name: str

    def update(self, values: Sequence[float], timestamps: Sequence[float]) -> list[Finding]:
        """Feed values and their event timestamps; return findings."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Plain, versioned state."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        ...


@runtime_checkable
class BatchDetector(Protocol):
    """A detector fed a version's events as they come, whole (several fields at once).

    ``columns`` are the same events' columns (:class:`BatchColumns`), which
    the monitor has extracted for its windows: a detector may read a field
    there instead of from each event.
    """

    name: str

    def update(self, events: list[dict[str, Any]], columns: BatchColumns | None = None) -> list[Finding]:
        """Feed decoded events; return findings."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Plain, versioned state."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        ...


@runtime_checkable
class WindowDetector(Protocol):
    """A detector that tests the tumbling window against the version's reference as the window fills.

    The monitor ends its batches where :meth:`events_until_test` says, so a
    test sees the same events whatever the batching (None: no test is due in
    this window any more, or the detector finds its test counts inside a
    batch itself, as data quality does).
    """

    name: str

    def events_until_test(self, window_start: float, count: int) -> int | None:
        """Events the window starting at ``window_start`` (holding ``count``) takes before the next test."""
        ...

    def check_window(
        self, window: WindowStats, events: list[dict[str, Any]], columns: BatchColumns, event_time: float
    ) -> list[Finding]:
        """The window now holds ``events`` too (their feature ``columns``); return findings."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Plain, versioned state."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        ...


@runtime_checkable
class LabelDetector(Protocol):
    """A detector fed labelled predictions, when the labels arrive (hours after the predictions, maybe)."""

    def update(self, label: Any, prediction: Any, event_time: float) -> list[Finding]:
        """Feed one joined label and its prediction; return findings."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Plain, versioned state."""
        ...


@runtime_checkable
class ScoredDetector(Protocol):
    """A detector with figures for dashboards (outlier ratio, worst score, shift), exported to Prometheus."""

    def scores(self) -> dict[str, float]:
        """``outlier_ratio``, ``max_score`` and ``shift_sd``, those it has."""
        ...


# The most numbers the rules taken together put in one array. Their gain is the numpy calls they share,
# which matters for small batches; past this, one array per rule is as cheap, and arrays larger than
# the worker's mmap threshold (stream.worker.memory_release) come as fresh pages, each touched a fault.
MAX_TOGETHER = 16_384


def row_groups(rows: int, per_row: int, most: int = MAX_TOGETHER) -> list[slice]:
    """Consecutive groups of ``rows`` rows of ``per_row`` numbers each, at most ``most`` numbers a group.

    >>> row_groups(5, 4, most=8), row_groups(2, 100, most=8)
    ([slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)], [slice(0, 1, None), slice(1, 2, None)])
    """
    size = max(1, most // max(per_row, 1))
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def update_rules(calls: Sequence[tuple[Any, tuple[Sequence[float], Sequence[float]]]]) -> list[list[Finding]]:
    """``rule.update(values, timestamps)`` of each call, in order; the findings of each.

    The rules of a class with an ``update_together`` (see :class:`SignalDetector`)
    take their values together: a model's signals arrive in one batch, and
    one array for all of them costs about what one signal did.
    """
    found: list[list[Finding]] = [[] for _ in calls]
    together: dict[type, list[int]] = {}
    for at, (rule, series) in enumerate(calls):
        if hasattr(type(rule), "update_together"):
            together.setdefault(type(rule), []).append(at)
        else:
            found[at] = rule.update(*series)
    for kind, ats in together.items():
        rules, series = [calls[at][0] for at in ats], [calls[at][1] for at in ats]
        for at, rule_found in zip(ats, kind.update_together(rules, series), strict=True):
            found[at] = rule_found
    return found

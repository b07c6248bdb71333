"""What a detector reports (a finding, before it becomes an alert) and what a per-signal detector provides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


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
    start = event_time - event_time % size_s
    return {"type": "stream", "start": start, "end": start + size_s, "size_s": size_s}


def plain_series(values: Sequence[float], timestamps: Sequence[float]) -> tuple[list[float], list[float]]:
    """Values and timestamps as plain floats (numpy scalars must not leak into JSON state), of equal length.

    >>> plain_series([1, 2], [0.5, 0.6])
    ([1.0, 2.0], [0.5, 0.6])
    """
    xs = np.asarray(values, dtype=np.float64).tolist()
    ts = np.asarray(timestamps, dtype=np.float64).tolist()
    if len(xs) != len(ts):
        raise ValueError(f"{len(xs)} values but {len(ts)} timestamps")
    return xs, ts


@dataclass(slots=True)
class Finding:
    """A detector's verdict on a signal: the value, the baseline, the reason.

    ``stream.alerts`` turns a finding into an alert message by adding the
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


@runtime_checkable
class SignalDetector(Protocol):
    """A detector fed one signal's values with their event times, as the monitor file names them.

    Built as ``Class(signal, window_s=..., **params)``. ``update`` returns a
    finding per detection and must decide the same whatever the batching;
    ``to_dict`` returns plain JSON data (never pickle) that ``load_state``
    restores, refusing a state version it does not know with ``ValueError``.
    An optional ``scores()`` returns figures for the Prometheus exporter.
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

"""What a detector reports (a finding, before it becomes an alert) and what a per-signal detector provides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


def tumbling_window(start: float, size_s: float) -> dict[str, Any]:
    """The ``window`` field of a finding made in the tumbling window starting at ``start``.

    >>> tumbling_window(60.0, 60.0)
    {'type': 'tumbling', 'start': 60.0, 'end': 120.0, 'size_s': 60.0}
    """
    return {"type": "tumbling", "start": start, "end": start + size_s, "size_s": size_s}


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

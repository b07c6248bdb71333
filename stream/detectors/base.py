"""What a detector reports: a finding, before it becomes an alert."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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

"""What a detector reports: a finding, before it becomes an alert."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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

"""What a worker process has done since it started, for ``/health``."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class WorkerCounters:
    """Counts of records, events and outcomes since the worker started.

    >>> counters = WorkerCounters(started_at=0.0)
    >>> counters.events += 3
    >>> {k: v for k, v in counters.as_dict().items() if k != "uptime_s"}["events"]
    3
    """

    records: int = 0
    labels: int = 0
    events: int = 0
    dead_letters: int = 0
    alerts: int = 0
    replayed: int = 0
    duplicate_batches: int = 0
    checkpoints: int = 0
    checkpoint_failures: int = 0
    refetches: int = 0
    state_loads: int = 0
    fetch_restarts: int = 0
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters with the uptime."""
        out = asdict(self)
        started = out.pop("started_at")
        out["uptime_s"] = round(time.time() - started, 3)
        return out

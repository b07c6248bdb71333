"""User-written detectors that fail on one value: the poisoned records of the reliability tests.

Loaded by name from a monitor file (``"tests.poison_detector:PoisonRule"``),
the way an operator plugs in a detector of their own.
"""

from __future__ import annotations

import time
from typing import Any


class PoisonRule:
    """Counts the values it sees; raises ``ValueError`` on ``poison``."""

    def __init__(self, signal: str, window_s: float = 60.0, poison: float = 666.0) -> None:
        self.signal = signal
        self.poison = poison
        self.seen = 0
        self.fed: list[tuple[type, type]] = []  # the type of each batch of values, and of its first value

    def update(self, values: list[float], times: list[float]) -> list[Any]:
        """Count ``values``; raise part-way through when the poison is among them."""
        self.fed.append((type(values), type(values[0])))
        for value in values:
            if value == self.poison:
                raise ValueError(f"poisoned value {value} on {self.signal}")
            self.seen += 1
        return []

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {"seen": self.seen}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        self.seen = state["seen"]


class HangingRule(PoisonRule):
    """Blocks the worker (a synchronous sleep) on ``poison``, as a detector stuck on a lock or a socket would."""

    def update(self, values: list[float], times: list[float]) -> list[Any]:
        """Count ``values``; sleep for an hour when the poison is among them."""
        if self.poison in values:
            time.sleep(3600)
        self.seen += len(values)
        return []

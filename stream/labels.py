"""Joining delayed labels to their predictions by ``request_id``.

The join state is a mapping from ``model\\x1frequest_id`` to a small entry;
the worker passes its Faust table (changelog-backed, so a restart keeps
pending predictions), tests pass a dict. Entries carry the wall-clock time
they were written and expire after ``ttl_s``:

- a prediction waiting for its label: ``{"p": prediction, "v": version, "t": event time, "w": wall}``;
- a label that came before its prediction: ``{"l": label, "lt": label time, "w": wall}``;
- a pair already joined, kept to recognise a second label: ``{"done": 1, "w": wall}``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

SEPARATOR = "\x1f"


def join_key(model: str, request_id: str) -> bytes:
    """Table key of one request of one model."""
    return f"{model}{SEPARATOR}{request_id}".encode()


@dataclass(slots=True)
class Joined:
    """A label matched with its prediction."""

    model_version: str
    prediction: Any
    label: Any
    prediction_time: float
    label_time: float


class LabelJoiner:
    """Matches labels and predictions in either order; counts what never matches.

    >>> j = LabelJoiner({})
    >>> j.on_prediction("m", "1", "r1", prediction=1, event_time=10.0)
    ('stored', None)
    >>> outcome, joined = j.on_label("m", "r1", label=0, label_time=50.0)
    >>> outcome, joined.label, joined.prediction
    ('joined', 0, 1)
    >>> j.on_label("m", "r1", label=0, label_time=51.0)
    ('duplicate_label', None)
    """

    def __init__(self, store: MutableMapping[bytes, dict[str, Any]], ttl_s: float = 6 * 3600.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.counts: Counter[str] = Counter()

    def on_prediction(
        self, model: str, version: str, request_id: str, prediction: Any, event_time: float
    ) -> tuple[str, Joined | None]:
        """Remember a prediction; return the outcome and the join if its label came first."""
        key = join_key(model, request_id)
        entry = self.store.get(key)
        now = time.time()
        if entry is not None and "l" in entry:
            self.store[key] = {"done": 1, "w": now}
            return self._count("joined_label_first"), Joined(version, prediction, entry["l"], event_time, entry["lt"])
        if entry is not None:
            return self._count("duplicate_prediction"), None
        self.store[key] = {"p": prediction, "v": version, "t": event_time, "w": now}
        return "stored", None

    def on_label(self, model: str, request_id: str, label: Any, label_time: float) -> tuple[str, Joined | None]:
        """Match a label; return the outcome and the join, if any."""
        key = join_key(model, request_id)
        entry = self.store.get(key)
        now = time.time()
        if entry is None:
            self.store[key] = {"l": label, "lt": label_time, "w": now}
            return self._count("label_before_prediction"), None
        if "p" in entry:
            self.store[key] = {"done": 1, "w": now}
            return self._count("joined"), Joined(entry["v"], entry["p"], label, entry["t"], label_time)
        return self._count("duplicate_label"), None

    def _count(self, outcome: str) -> str:
        self.counts[outcome] += 1
        return outcome

    def expired(self, now: float | None = None) -> list[tuple[bytes, str, str]]:
        """Entries past the TTL, as (key, model, outcome); the caller deletes them."""
        now = time.time() if now is None else now
        cutoff = now - self.ttl_s
        out = []
        for key, entry in list(self.store.items()):
            if entry is None or entry.get("w", now) >= cutoff:
                continue
            model = key.decode(errors="replace").split(SEPARATOR, 1)[0]
            if "p" in entry:
                outcome = "prediction_never_labelled"
            elif "l" in entry:
                outcome = "label_never_matched"
            else:
                outcome = "joined_expired"
            out.append((key, model, outcome))
        return out

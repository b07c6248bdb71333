"""Input records as the worker applies them: each with the items it brings, in runs of about a step's size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream.monitoring.model_monitor import ModelMonitor

# What applies a list of items (events, or labels) to a model's state; returns its alerts.
Change = Callable[[ModelMonitor, list[Any]], list[dict[str, Any]]]


@dataclass(slots=True)
class RecordInput:
    """One input record (a Faust event) and the items it brings: events, or one label."""

    record: Any
    items: list[Any]
    batch_id: str | None
    # Items that raised and were dead-lettered instead of applied.
    skipped: set[int] = field(default_factory=set)

    @property
    def source(self) -> str:
        """``topic:partition`` of the record, as the model state keeps its offsets."""
        message = self.record.message
        return f"{message.topic}:{message.partition}"

    @property
    def size(self) -> int:
        """The record's value in bytes, which holding it keeps in memory."""
        return len(self.record.value or b"")


def steps(inputs: list[RecordInput], events: int) -> list[list[RecordInput]]:
    """``inputs`` in order, in runs of about ``events`` events (a bigger record makes a run alone).

    >>> runs = steps([RecordInput(None, [0] * n, None) for n in (3, 3, 5, 1)], events=6)
    >>> [[len(i.items) for i in run] for run in runs]
    [[3, 3], [5, 1]]
    """
    runs: list[list[RecordInput]] = [[]]
    size = 0
    for inp in inputs:
        if runs[-1] and size + len(inp.items) > events:
            runs.append([])
            size = 0
        runs[-1].append(inp)
        size += len(inp.items)
    return runs


def mark_applied(monitor: ModelMonitor, inp: RecordInput) -> None:
    """Record in the model's state that it holds ``inp``: its offset, and its envelope id."""
    monitor.mark_applied(inp.source, inp.record.message.offset)
    monitor.remember_batch(inp.batch_id)

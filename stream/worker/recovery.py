"""Undoing a poisoned batch: only what raises is dead-lettered, and the model's state is never half-updated.

The slow path, taken only after applying a batch raised. The live state may
be half-updated, so it is rebuilt from the model's last checkpoint, and the
records applied since then are applied again (they went through before;
their alerts are out already). Then the new records go one at a time, and
item by item within a record that raises, with a snapshot after each good
step, so only what raises is undone and dead-lettered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from stream.monitoring.model_monitor import ModelMonitor
from stream.worker.checkpoint import Checkpointer
from stream.worker.records import Change, RecordInput, mark_applied
from stream.worker.state_cache import ModelStates, snapshot

log = logging.getLogger(__name__)

# Dead-letters one item that raised: the exception, the item's bytes, and its record.
DeadLetterFailure = Callable[[Exception, bytes, RecordInput], Awaitable[None]]


class Recovery:
    """Re-applies a model's held records to its last checkpoint, then the new ones one by one.

    ``decode`` turns a held record back into its items (None if it has
    none); ``change_for`` says what applies a record of its topic.
    """

    def __init__(
        self,
        states: ModelStates,
        checkpointer: Checkpointer,
        decode: Callable[[Any], RecordInput | None],
        change_for: Callable[[Any], Change],
        dead_letter: DeadLetterFailure,
    ) -> None:
        self.states = states
        self.checkpointer = checkpointer
        self.decode = decode
        self.change_for = change_for
        self.dead_letter = dead_letter

    async def recover(
        self, model: str, change: Change, fresh: list[RecordInput]
    ) -> tuple[ModelMonitor, list[dict[str, Any]], int]:
        """Apply ``fresh`` to ``model`` after applying them together raised; returns the state, alerts and count."""
        async with self.checkpointer.undoing(model):
            monitor = self._redo_held(model)
            return await self._apply_one_by_one(model, monitor, change, fresh)

    def _redo_held(self, model: str) -> ModelMonitor:
        monitor = self.states.rebuild(model)
        # Consecutive held records of one kind go in one call, without what was dead-lettered.
        replays: list[tuple[Change, list[Any]]] = []
        for record, skipped in self.checkpointer.held.records_of(model):
            replay = self.decode(record)
            if replay is None:
                continue
            mark_applied(monitor, replay)
            items = [item for i, item in enumerate(replay.items) if i not in skipped]
            redo = self.change_for(record)
            if replays and replays[-1][0] == redo:
                replays[-1][1].extend(items)
            else:
                replays.append((redo, items))
        try:
            for redo, items in replays:
                redo(monitor, items)
        except Exception:
            # They went through before: a detector that decides otherwise the second time is broken.
            log.exception("re-applying model %s's records since its checkpoint failed; they are not counted", model)
            monitor = self.states.rebuild(model)
        return monitor

    async def _apply_one_by_one(
        self, model: str, monitor: ModelMonitor, change: Change, fresh: list[RecordInput]
    ) -> tuple[ModelMonitor, list[dict[str, Any]], int]:
        good = snapshot(monitor)
        alerts: list[dict[str, Any]] = []
        applied = 0
        for inp in fresh:
            mark_applied(monitor, inp)
            try:
                alerts += change(monitor, inp.items)
                applied += len(inp.items)
                good = snapshot(monitor)
                continue
            except Exception:
                monitor = self.states.restore(model, good)
                mark_applied(monitor, inp)
            for index, item in enumerate(inp.items):
                try:
                    alerts += change(monitor, [item])
                except Exception as exc:
                    monitor = self.states.restore(model, good)
                    inp.skipped.add(index)
                    await self.dead_letter(exc, encode_item(item), inp)
                    continue
                applied += 1
                good = snapshot(monitor)
        self.states.put(model, monitor, self.states.table.get(model.encode()))
        return monitor, alerts, applied


def encode_item(item: Any) -> bytes:
    """One event or label as the bytes a dead letter carries."""
    return orjson.dumps(item, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=str)

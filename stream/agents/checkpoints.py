"""Checkpoints of the model states: on a clock, and forgotten when partitions go.

The agents checkpoint after their batches when one is due; the clock covers a
quiet stream, and the moments when Faust waits for every held record to be
released: before it hands partitions over in a rebalance, and before its last
commit when the worker stops. That is why the clock is a plain asyncio task
rather than a Faust timer: Faust stops its timers before it waits, and the
wait would then last until the shutdown watchdog fired.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream.app import MonitorApp

log = logging.getLogger(__name__)


def register(mon: MonitorApp) -> None:
    """Start the checkpoint clock with the app, and hook the revocation of partitions."""
    interval = mon.settings.checkpoint_interval_s / 4

    async def clock() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await mon.checkpoint()
            except Exception:
                log.exception("checkpoint failed; the held records stay uncommitted and are retried")

    @mon.app.task
    async def start_checkpoint_clock():
        # Kept on the app object so the task is not garbage-collected.
        mon.checkpoint_clock = asyncio.ensure_future(clock())

    @mon.app.on_partitions_revoked.connect
    async def on_partitions_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        mon.forget_state()

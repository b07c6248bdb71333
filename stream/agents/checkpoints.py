"""Checkpoints of the model states: on a timer, and forgotten when partitions go.

The agents checkpoint after their batches when one is due; the timer covers a
quiet stream, and the revocation of partitions, when Faust waits for every
held record to be released before it lets them go.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream.app import MonitorApp

log = logging.getLogger(__name__)


def register(mon: MonitorApp) -> None:
    """Attach the checkpoint timer and the revocation hook to ``mon``'s Faust app."""

    @mon.app.timer(interval=mon.settings.checkpoint_interval_s / 4)
    async def checkpoint_states():
        await mon.checkpoint()

    @mon.app.on_partitions_revoked.connect
    async def on_partitions_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        mon.forget_state()

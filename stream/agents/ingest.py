"""The ingest agent: inference-events records in; alerts and dead letters out.

Records are taken a batch at a time so that each model's share of the batch
is applied in one go: single-event records from producers without the SDK
then cost about what envelopes cost.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.app import MonitorApp


def register(mon: MonitorApp) -> None:
    """Attach the ingest agent to ``mon``'s Faust app."""
    settings = mon.settings

    @mon.app.agent(mon.events_topic, name="ingest")
    async def ingest(stream):
        async for records in stream.take_events(settings.ingest_batch_records, within=settings.ingest_wait_s):
            # When the worker stops, Faust cancels the agent and then acknowledges the
            # whole batch. So the batch is finished and its states saved first:
            # nothing may be committed that no saved state covers.
            applying = asyncio.ensure_future(mon.ingest(records))
            try:
                await asyncio.shield(applying)
            except asyncio.CancelledError:
                await applying
                await mon.checkpoint(force=True)
                raise

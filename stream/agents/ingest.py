"""The ingest agent: inference-events records in; alerts and dead letters out.

Records are taken a batch at a time so that each model's share of the batch
is applied in one go: single-event records from producers without the SDK
then cost about what envelopes cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.app import MonitorApp


def register(mon: MonitorApp) -> None:
    """Attach the ingest agent to ``mon``'s Faust app."""
    settings = mon.settings

    @mon.app.agent(mon.events_topic, name="ingest")
    async def ingest(stream):
        async for records in stream.take_events(settings.ingest_batch_records, within=settings.ingest_wait_s):
            await mon.ingest(records)

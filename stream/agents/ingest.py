"""The ingest agent: inference-events records in; alerts and dead letters out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stream.codec import decode_record

if TYPE_CHECKING:
    from stream.app import MonitorApp


def register(mon: MonitorApp) -> None:
    """Attach the ingest agent to ``mon``'s Faust app."""

    @mon.app.agent(mon.events_topic, name="ingest")
    async def ingest(stream):
        async for event in stream.events():
            key, value, message = event.key, event.value, event.message
            mon.counters.records += 1
            mon.metrics.records.inc()
            decoded = decode_record(key, value, mon.time_bounds)
            for reject in decoded.rejects:
                await mon.dead_letter(reject, key, message)
            if not decoded.events:
                continue
            events = decoded.events
            model = events[0]["model"]
            monitor = await mon.apply(
                model, mon.process_events, events, key=key, value=value, message=message, batch_id=decoded.batch_id
            )
            if monitor is not None:
                mon.report_state(monitor)
                mon.count_events(model, len(events))

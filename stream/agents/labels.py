"""The labels agent: inference-labels records in; performance alerts and dead letters out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from stream.codec import decode_label

if TYPE_CHECKING:
    from stream.app import MonitorApp

log = logging.getLogger(__name__)


def register(mon: MonitorApp) -> None:
    """Attach the labels agent and the join-expiry timer to ``mon``'s Faust app."""

    @mon.app.agent(mon.labels_topic, name="labels")
    async def labels(stream):
        async for event in stream.events():
            key, value, message = event.key, event.value, event.message
            label, problem = decode_label(key, value, mon.time_bounds)
            if problem is not None:
                await mon.dead_letter(problem, key, message)
                continue
            assert label is not None
            if await mon.apply(label["model"], mon.join_label, label, key=key, value=value, message=message):
                mon.counters.labels += 1

    @mon.app.timer(interval=60.0)
    async def expire_join_entries():
        expired = mon.expire_join_entries()
        if expired:
            log.info("label join: %d entries past their %g s time-to-live removed", expired, mon.settings.label_ttl_s)

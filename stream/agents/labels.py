"""The labels agent: inference-labels records in; performance alerts and dead letters out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.app import MonitorApp

log = logging.getLogger(__name__)


def register(mon: MonitorApp) -> None:
    """Attach the labels agent and the join-expiry timer to ``mon``'s Faust app."""

    @mon.app.agent(mon.labels_topic, name="labels")
    async def labels(stream):
        async for record in stream.events():
            await mon.ingest_label(record)

    @mon.app.timer(interval=60.0)
    async def expire_join_entries():
        expired = mon.expire_join_entries()
        if expired:
            log.info("label join: %d entries past their %g s time-to-live removed", expired, mon.settings.label_ttl_s)

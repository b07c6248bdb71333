"""The labels agent: inference-labels records in; performance alerts and dead letters out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson

from stream.codec import Reject, decode_label
from stream.deadletter import dead_letter

if TYPE_CHECKING:
    from stream.app import MonitorApp

log = logging.getLogger(__name__)


def register(mon: MonitorApp) -> None:
    """Attach the labels agent and the join-expiry timer to ``mon``'s Faust app."""

    async def reject(r: Reject, key: bytes | None, message) -> None:
        letter = dead_letter(r, topic=message.topic, partition=message.partition, offset=message.offset, key=key)
        await mon.deadletter_topic.send(key=key, value=orjson.dumps(letter))
        mon.counters.dead_letters += 1
        mon.metrics.dead_letters.labels(error_type=r.error_type).inc()

    @mon.app.agent(mon.labels_topic, name="labels")
    async def labels(stream):
        async for event in stream.events():
            key, value, message = event.key, event.value, event.message
            label, problem = decode_label(key, value)
            if problem is not None:
                await reject(problem, key, message)
                continue
            assert label is not None
            model = label["model"]
            try:
                monitor = mon.monitor_for(model)
                alerts = mon.join_label(monitor, label)
                mon.save(monitor)
            except Exception as exc:
                mon.forget(model)
                log.exception("label processing failed for model %s", model)
                await reject(
                    Reject(f"processing failed: {type(exc).__name__}: {exc}", "processing_error", value or b""),
                    key,
                    message,
                )
                continue
            mon.counters.labels += 1
            await mon.publish_alerts(alerts)
            await mon.publish_retrain_requests(monitor)

    @mon.app.timer(interval=60.0)
    async def expire_join_entries():
        expired = mon.expire_join_entries()
        if expired:
            log.info("label join: %d entries past their %g s time-to-live removed", expired, mon.settings.label_ttl_s)

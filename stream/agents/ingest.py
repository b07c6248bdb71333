"""The ingest agent: inference-events records in; alerts and dead letters out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import orjson

from stream.codec import Reject, decode_record
from stream.deadletter import dead_letter

if TYPE_CHECKING:
    from stream.app import MonitorApp

log = logging.getLogger(__name__)


def register(mon: MonitorApp) -> None:
    """Attach the ingest agent to ``mon``'s Faust app."""

    async def publish_rejects(rejects: list[Reject], key: bytes | None, message) -> None:
        for reject in rejects:
            letter = dead_letter(
                reject,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=key,
            )
            await mon.deadletter_topic.send(key=key, value=orjson.dumps(letter))
            mon.counters.dead_letters += 1
            mon.metrics.dead_letters.labels(error_type=reject.error_type).inc()

    warned: set[tuple[str, str]] = set()

    def report_caps(monitor) -> None:
        for version, (count, names) in monitor.untracked_features().items():
            mon.metrics.features_untracked.labels(model=monitor.model, model_version=version).set(count)
            if (monitor.model, version) not in warned:
                warned.add((monitor.model, version))
                log.warning(
                    "model %s %s has more than max_features=%d features; %d not tracked (first: %s)",
                    monitor.model,
                    version,
                    mon.settings.max_features,
                    count,
                    ", ".join(names),
                )
        for version, v in monitor.versions.items():
            if v.windows.too_late:
                mon.metrics.late_events.labels(model=monitor.model, model_version=version).set(v.windows.too_late)

    @mon.app.agent(mon.events_topic, name="ingest")
    async def ingest(stream):
        async for event in stream.events():
            key, value, message = event.key, event.value, event.message
            mon.counters.records += 1
            mon.metrics.records.inc()
            decoded = decode_record(key, value)
            await publish_rejects(decoded.rejects, key, message)
            if not decoded.events:
                continue
            model = decoded.events[0]["model"]
            try:
                monitor = mon.monitor_for(model)
                alerts = monitor.process(decoded.events)
                alerts += mon.join_predictions(monitor, decoded.events)
                mon.save(monitor)
            except Exception as exc:
                # One poisoned record must not stop the worker or leave the
                # model's state half-updated: reload it from the table.
                mon.forget(model)
                log.exception("processing failed for model %s", model)
                reason = f"processing failed: {type(exc).__name__}: {exc}"
                await publish_rejects([Reject(reason, "processing_error", value or b"")], key, message)
                continue
            report_caps(monitor)
            mon.counters.events += len(decoded.events)
            mon.metrics.events.labels(model=model).inc(len(decoded.events))
            await mon.publish_alerts(alerts)
            await mon.publish_retrain_requests(monitor)

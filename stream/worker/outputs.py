"""What the worker sends out: alerts, retraining requests and dead letters, each counted and exported."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import orjson

from stream.contracts.codec import Reject
from stream.contracts.dead_letters import dead_letter
from stream.monitoring.model_monitor import ModelMonitor
from stream.web.metrics import WorkerMetrics
from stream.worker.counters import WorkerCounters

log = logging.getLogger(__name__)


class Outputs:
    """The worker's output topics, with the counters and metrics each message moves.

    The topics are Faust topics (anything with an async ``send(key=, value=)``).
    """

    def __init__(
        self,
        alerts: Any,
        retrain: Any,
        deadletter: Any,
        counters: WorkerCounters,
        metrics: WorkerMetrics,
        max_features: int,
    ) -> None:
        self.alerts_topic = alerts
        self.retrain_topic = retrain
        self.deadletter_topic = deadletter
        self.counters = counters
        self.metrics = metrics
        self.max_features = max_features
        # The alerts this worker published lately, for the status page.
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=100)
        self._warned_caps: set[tuple[str, str]] = set()

    async def publish_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Publish alerts keyed by fingerprint, and count them."""
        for alert in alerts:
            await self.alerts_topic.send(key=alert["fingerprint"].encode(), value=orjson.dumps(alert))
            self.counters.alerts += 1
            self.recent_alerts.append(alert)
            model = self.metrics.model_label(alert["model"])
            self.metrics.alerts.labels(model=model, kind=alert["kind"], severity=alert["severity"]).inc()
            log.warning("ALERT %s", alert["message"])

    async def publish_retrain_requests(self, monitor: ModelMonitor) -> None:
        """Publish the model's pending retraining requests, keyed by model."""
        for request in monitor.take_retrain_requests():
            await self.retrain_topic.send(key=monitor.model.encode(), value=orjson.dumps(request))
            log.warning("RETRAIN %s", request["message"])

    async def dead_letter(self, reject: Reject, key: bytes | None, message: Any) -> None:
        """Write one rejected input, with where it came from, to the dead-letter topic."""
        letter = dead_letter(reject, topic=message.topic, partition=message.partition, offset=message.offset, key=key)
        await self.deadletter_topic.send(key=key, value=orjson.dumps(letter))
        self.counters.dead_letters += 1
        self.metrics.dead_letters.labels(error_type=reject.error_type).inc()

    async def dead_letter_failure(self, exc: Exception, value: bytes | None, key: bytes | None, message: Any) -> None:
        """Dead-letter an input whose processing raised ``exc``."""
        reason = f"processing failed: {type(exc).__name__}: {exc}"
        await self.dead_letter(Reject(reason, "processing_error", value or b""), key, message)

    def count_events(self, model: str, n: int) -> None:
        """Count ``n`` events applied to ``model`` in the health counters and on /metrics."""
        self.counters.events += n
        self.metrics.events.labels(model=self.metrics.model_label(model)).inc(n)

    def report_state(self, monitor: ModelMonitor) -> None:
        """Export the model's feature-cap overflow and too-late counts; log the overflow once."""
        for version, v in monitor.versions.items():
            windows = v.windows
            labels = {"model": self.metrics.model_label(monitor.model), "model_version": version}
            if windows.too_late:
                self.metrics.late_events.labels(**labels).set(windows.too_late)
            if not windows.untracked_features:
                continue
            self.metrics.features_untracked.labels(**labels).set(windows.untracked_features)
            if (monitor.model, version) not in self._warned_caps:
                self._warned_caps.add((monitor.model, version))
                log.warning(
                    "model %s %s has more than max_features=%d features; %d not tracked (first: %s)",
                    monitor.model,
                    version,
                    self.max_features,
                    windows.untracked_features,
                    ", ".join(windows.untracked_names[:5]),
                )

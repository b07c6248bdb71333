"""Prometheus metrics of a worker, each app with its own registry.

Counters and the processing-time histogram are updated as records are
processed; the per-model window and detector series are read at scrape time
(:mod:`stream.web.exporter`).
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "stream_monitor"

log = logging.getLogger(__name__)

# A *_created sample beside every counter doubles the series for no use on dashboards.
disable_created_metrics()


OTHER_MODELS = "_other"


class ModelLabelCap:
    """The ``model`` label for a model: itself for the first ``max_models`` seen, then ``_other``.

    Producers choose model names; without a cap a stream of new names would
    grow Prometheus's series without end.

    >>> cap = ModelLabelCap(max_models=2)
    >>> [cap("a"), cap("b"), cap("c"), cap("a"), cap("d")]
    ['a', 'b', '_other', 'a', '_other']
    >>> cap.overflow
    2
    """

    def __init__(self, max_models: int) -> None:
        self.max_models = max_models
        self.known: set[str] = set()
        self.overflow = 0

    def __call__(self, model: str) -> str:
        if model in self.known:
            return model
        if len(self.known) < self.max_models:
            self.known.add(model)
            return model
        if not self.overflow:
            log.warning(
                "more than metrics_max_models=%d models: counters of model %r and later new ones go to model=%r",
                self.max_models,
                model,
                OTHER_MODELS,
            )
        self.overflow += 1
        return OTHER_MODELS


class WorkerMetrics:
    """Counters for records, events, dead letters and alerts.

    >>> m = WorkerMetrics()
    >>> m.dead_letters.labels(error_type="invalid_json").inc()
    >>> b'stream_monitor_dead_letters_total{error_type="invalid_json"} 1.0' in m.render()
    True
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None, max_models: int = 200) -> None:
        self.registry = registry or CollectorRegistry()
        self.model_label = ModelLabelCap(max_models)
        self.records = Counter(
            f"{PREFIX}_records", "Input records read from the inference events topic.", registry=self.registry
        )
        self.events = Counter(
            f"{PREFIX}_events_processed",
            "Inference events processed, by model.",
            ["model"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            f"{PREFIX}_dead_letters",
            "Inputs written to the dead-letter topic, by error type.",
            ["error_type"],
            registry=self.registry,
        )
        self.replayed = Counter(
            f"{PREFIX}_records_replayed",
            "Input records seen again after a crash or rebalance and skipped: their effect was already saved.",
            registry=self.registry,
        )
        self.refetches = Counter(
            f"{PREFIX}_partition_refetches",
            "Holes in an input partition's offsets (records the consumer dropped around a rebalance) read again.",
            registry=self.registry,
        )
        self.fetch_restarts = Counter(
            f"{PREFIX}_partition_fetch_restarts",
            "Input partitions that read nothing for a while with records waiting, and were fetched again.",
            registry=self.registry,
        )
        self.duplicate_batches = Counter(
            f"{PREFIX}_envelopes_duplicate",
            "Envelopes received again under a batch id already applied (a sender's retry) and skipped.",
            registry=self.registry,
        )
        self.alerts = Counter(
            f"{PREFIX}_alerts",
            "Alerts published, by model, kind and severity.",
            ["model", "kind", "severity"],
            registry=self.registry,
        )
        self.checkpoints = Counter(
            f"{PREFIX}_checkpoints",
            "Checkpoints that saved model states, after which their input records were committed.",
            registry=self.registry,
        )
        self.checkpoint_failures = Counter(
            f"{PREFIX}_checkpoint_failures",
            "Checkpoints that failed; their records stay uncommitted until a later one succeeds.",
            registry=self.registry,
        )
        self.state_loads = Counter(
            f"{PREFIX}_state_loads",
            "Model states read back from the table into memory. Growing faster than models are added: "
            "more models are busy than state_cache_models keeps live, and each is decoded again.",
            registry=self.registry,
        )
        self.processing = Histogram(
            f"{PREFIX}_processing_seconds",
            "Time to apply one input record (an envelope or a label) to its model's state.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.features_untracked = Gauge(
            f"{PREFIX}_features_untracked",
            "Features of a model beyond the max_features cap, not tracked.",
            ["model", "model_version"],
            registry=self.registry,
        )
        self.late_events = Gauge(
            f"{PREFIX}_events_too_late",
            "Events whose window had closed (beyond the allowed lateness), not placed.",
            ["model", "model_version"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format Prometheus scrapes."""
        return generate_latest(self.registry)

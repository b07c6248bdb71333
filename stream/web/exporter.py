"""Per-model series for Prometheus, read from the models' state at scrape time.

Counting happens as records are processed (:mod:`stream.web.metrics`); what a
window or a detector currently says is read only when Prometheus asks, so the
hot path pays nothing for it. At most ``metrics_max_models`` models per worker
get series; the rest are counted in ``stream_monitor_metrics_models_dropped``
and logged once.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from stream.detectors.base import ScoredDetector
from stream.monitoring.alert_lifecycle import AlertLifecycle
from stream.monitoring.model_monitor import ALL_VERSIONS, ModelMonitor
from stream.monitoring.version_monitor import VersionMonitor
from stream.privacy.noise import SliceNoise, private_segments
from stream.web.metrics import OTHER_MODELS, PREFIX, ModelLabelCap
from stream.web.status import window_figures

QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
VERSION = ["model", "model_version"]
DETECTOR = [*VERSION, "signal", "detector"]


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


class ModelSeriesCollector:
    """A prometheus-client collector over the models a worker owns.

    ``models`` returns the monitors to export (called at every scrape);
    ``lag`` returns ``(topic, partition, records behind)`` for each assigned
    partition.
    """

    def __init__(
        self,
        models: Callable[[], Iterable[ModelMonitor]],
        lag: Callable[[], Iterable[tuple[str, int, int]]],
        model_label: ModelLabelCap,
        noise: SliceNoise | None = None,
    ) -> None:
        self._models = models
        self._lag = lag
        self.model_label = model_label
        # Segment series go out noisy when the worker is set to (see stream.privacy.noise).
        self.noise = noise

    def describe(self) -> list[Metric]:
        # Empty: the registry must not call collect() at registration, before the app runs.
        return []

    def collect(self) -> Iterator[Metric]:
        """Every per-model, per-detector and per-partition series, as they are now."""
        g = {
            "events": _gauge("window_events", "Events in the current tumbling window.", VERSION),
            "latency": _gauge(
                "window_latency_seconds", "Latency quantiles of the current tumbling window.", [*VERSION, "quantile"]
            ),
            "errors": _gauge("window_error_ratio", "Share of failed requests in the current tumbling window.", VERSION),
            "throughput": _gauge(
                "window_throughput_events_per_second", "Events per second of the current tumbling window.", VERSION
            ),
            "segment_events": _gauge(
                "segment_window_events",
                "Events of one segment in the current tumbling window (at most max_segments segments per version, "
                "the rest as 'other'; none under min_slice_events).",
                [*VERSION, "segment"],
            ),
            "segment_errors": _gauge(
                "segment_window_error_ratio",
                "Share of failed requests of one segment in the current tumbling window.",
                [*VERSION, "segment"],
            ),
            "segment_latency": _gauge(
                "segment_window_latency_seconds",
                "Latency quantiles of one segment in the current tumbling window.",
                [*VERSION, "segment", "quantile"],
            ),
            "anomaly": _gauge(
                "anomaly_outlier_ratio", "Share of outliers in the current window, per anomaly detector.", DETECTOR
            ),
            "anomaly_score": _gauge(
                "anomaly_max_score", "The worst outlier score in the current window, per anomaly detector.", DETECTOR
            ),
            "shift": _gauge(
                "drift_shift_sd",
                "How far a streaming drift detector sees the signal moved, in the units of its threshold "
                "(cusum: block standard deviations; level_shift: local spreads; adwin: warm-up standard deviations).",
                DETECTOR,
            ),
            "psi": _gauge(
                "drift_psi",
                "Population stability index of the current window against the reference.",
                [*VERSION, "signal"],
            ),
            "performance": _gauge(
                "performance", "Rolling performance over the latest labels, by metric.", [*VERSION, "metric"]
            ),
            "estimated": _gauge(
                "estimated_performance",
                "Performance estimated from calibrated confidence over the latest predictions, before labels "
                "(metric accuracy_band: the 95 % sampling band of the estimated accuracy).",
                [*VERSION, "metric"],
            ),
            "age": _gauge(
                "last_record_age_seconds",
                "Seconds since the model's last record arrived (wall clock); a silence alert fires past its threshold.",
                ["model"],
            ),
            "firing": _gauge(
                "alerts_firing",
                "Alerts firing now (not yet resolved), by severity and kind: what dashboards show as current.",
                [*VERSION, "severity", "kind"],
            ),
        }
        # The same cap as the counters' model label: a model counted under _other gets no series either.
        models = sorted(self._models(), key=lambda m: m.model)
        exported = [m for m in models if self.model_label(m.model) != OTHER_MODELS]
        dropped = len(models) - len(exported)
        now = time.time()
        for monitor in exported:
            quiet = monitor.traffic.quiet_s(now)
            if quiet is not None:
                g["age"].add_metric([monitor.model], quiet)
            _export_firing(g, [monitor.model, ALL_VERSIONS], [monitor.traffic_lifecycle])
            for version, vm in monitor.versions.items():
                _export_version(g, [monitor.model, version], vm, self.noise)
        yield from g.values()
        gone = _gauge("metrics_models_dropped", "Models beyond metrics_max_models, without per-model series.", [])
        gone.add_metric([], dropped)
        yield gone
        lag = _gauge(
            "consumer_lag_records", "Records not yet processed, per assigned input partition.", ["topic", "partition"]
        )
        for topic, partition, behind in self._lag():
            lag.add_metric([topic, str(partition)], behind)
        yield lag


def _export_version(
    g: dict[str, GaugeMetricFamily], labels: list[str], vm: VersionMonitor, noise: SliceNoise | None = None
) -> None:
    window = vm.windows.tumbling()
    figures = window_figures(window, vm.detection.window_s, vm.windows.watermark)
    g["events"].add_metric(labels, window.count)
    if window.count:
        g["errors"].add_metric(labels, figures["error_rate"])
        g["throughput"].add_metric(labels, figures["throughput_per_s"])
        for quantile, key in QUANTILES:
            if figures[key] is not None:
                g["latency"].add_metric([*labels, quantile], figures[key] / 1000.0)
    _export_segments(g, labels, vm, noise)
    for signal, rules in vm.signal_rules.items():
        for name, rule in rules.items():
            if isinstance(rule, ScoredDetector):  # a detector of the user's own may have none
                _export_scores(g, [*labels, signal, name], rule.scores)
    if vm.multivariate is not None:
        _export_scores(g, [*labels, "features", vm.multivariate.name], vm.multivariate.scores)
    if vm.drift is not None and window.count >= vm.drift.min_events:
        for score in vm.drift.scores(window):
            g["psi"].add_metric([*labels, score["feature"]], score["psi"])
    _export_firing(g, labels, [vm.lifecycle, vm.performance_lifecycle])
    for metric, value in (vm.performance.summary().get("metrics") or {}).items():
        if isinstance(value, int | float) and math.isfinite(value):
            g["performance"].add_metric([*labels, metric], value)
    estimated = vm.estimated.summary()["estimated"] if vm.estimated is not None else {}
    for metric, value in estimated.items():
        if math.isfinite(value):
            g["estimated"].add_metric([*labels, metric], value)


def _export_segments(
    g: dict[str, GaugeMetricFamily], labels: list[str], vm: VersionMonitor, noise: SliceNoise | None
) -> None:
    """The segments' window series, as the segments page shows them (small slices none; noisy if set)."""
    segments = private_segments(vm.segments.summary(), f"{vm.model}/{vm.version}", noise)
    for name, segment in segments.items():
        if segment.get("suppressed"):
            continue
        window = segment["window"]
        g["segment_events"].add_metric([*labels, name], window["count"])
        g["segment_errors"].add_metric([*labels, name], window["error_rate"])
        latency = window.get("latency_ms") or {}
        for quantile, key in QUANTILES:
            if latency.get(key) is not None:
                g["segment_latency"].add_metric([*labels, name, quantile], latency[key] / 1000.0)


def _export_scores(g: dict[str, GaugeMetricFamily], labels: list[str], scores: Callable[[], Any]) -> None:
    found = scores()
    for key, family in (("outlier_ratio", "anomaly"), ("max_score", "anomaly_score"), ("shift_sd", "shift")):
        value = found.get(key)
        if value is not None and math.isfinite(value):
            g[family].add_metric(labels, value)


def _export_firing(g: dict[str, GaugeMetricFamily], labels: list[str], lifecycles: list[AlertLifecycle]) -> None:
    firing = collections.Counter(
        (state["alert"]["severity"], state["alert"]["kind"]) for life in lifecycles for state in life.active.values()
    )
    for (severity, kind), n in sorted(firing.items()):
        g["firing"].add_metric([*labels, severity, kind], n)

"""Detection settings: windows, references, thresholds and alert timing, for the monitoring domain.

These are what :class:`~stream.monitoring.model_monitor.ModelMonitor` and the
detectors it builds receive; the worker's runtime settings (connection,
checkpoints, security, files) never reach them. The monitor file
(:mod:`stream.monitoring.monitor_file`) overrides them per model and signal.
Each is also read from ``STREAM_MONITOR_<NAME>`` (see :class:`stream.settings.Settings`).
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.settings.common import ConfigError, positive


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    """The worker-wide defaults of every model's windows, reference and detectors.

    >>> DetectionSettings(window_s=60, hop_s=60, hopping_s=600).validate().window_s
    60
    >>> DetectionSettings(hop_s=7).validate()
    Traceback (most recent call last):
    ...
    stream.settings.common.ConfigError: hopping_s: 600 must be a multiple of hop_s (7)
    """

    window_s: float = 60.0
    hopping_s: float = 600.0
    hop_s: float = 60.0
    lateness_s: float = 30.0
    reference_events: int = 1000
    # A learnt reference also spans at least this much event time, so that it holds
    # the signal's ordinary variation from minute to minute, not one snapshot of it.
    reference_min_s: float = 300.0
    max_features: int = 200
    max_categories: int = 100
    zscore_threshold: float = 4.0
    zscore_warmup: int = 200
    zscore_min_outliers: int = 5
    alert_cooldown_s: float = 300.0
    # 0: two tumbling windows without a finding resolve an alert.
    resolve_after_s: float = 0.0
    # Keep predictions for the label join: "auto" once a model got a label,
    # "always", or "never".
    join_predictions: str = "auto"
    performance_window: int = 500
    performance_margin: float = 0.05
    # Drift or a performance drop firing this long asks for retraining.
    retrain_after_s: float = 900.0
    drift_alpha: float = 0.001
    drift_min_psi: float = 0.1
    # A model that had traffic and gets no record for this long is silent (0: learnt
    # from its own quiet spells, at least silence_min_s; see stream.detectors.silence).
    silence_after_s: float = 0.0
    silence_min_s: float = 120.0
    # Segments (the events' segment field) watched one by one per version; later ones pool as "other".
    max_segments: int = 20
    # A slice (segment, client) with fewer events than this in a window is never exported raw.
    min_slice_events: int = 20

    def validate(self) -> DetectionSettings:
        """Check every field; raise :class:`ConfigError` naming the first bad one."""
        for name in ("window_s", "hopping_s", "hop_s"):
            value = getattr(self, name)
            positive(name, value)
            if value != int(value):
                raise ConfigError(f"{name}: {value!r} must be a whole number of seconds")
        if self.hopping_s % self.hop_s:
            raise ConfigError(f"hopping_s: {self.hopping_s:g} must be a multiple of hop_s ({self.hop_s:g})")
        if self.lateness_s < 0:
            raise ConfigError(f"lateness_s: {self.lateness_s!r} must not be negative")
        positive("reference_events", self.reference_events, integer=True)
        if self.reference_min_s < 0:
            raise ConfigError(f"reference_min_s: {self.reference_min_s!r} must not be negative")
        positive("alert_cooldown_s", self.alert_cooldown_s)
        if self.resolve_after_s < 0:
            raise ConfigError(f"resolve_after_s: {self.resolve_after_s!r} must not be negative")
        if not 0 < self.drift_alpha < 1:
            raise ConfigError(f"drift_alpha: {self.drift_alpha!r} must be between 0 and 1")
        positive("drift_min_psi", self.drift_min_psi)
        if self.join_predictions not in ("auto", "always", "never"):
            raise ConfigError(f"join_predictions: {self.join_predictions!r} must be auto, always or never")
        positive("retrain_after_s", self.retrain_after_s)
        positive("performance_window", self.performance_window, integer=True)
        positive("performance_margin", self.performance_margin)
        positive("max_features", self.max_features, integer=True)
        positive("max_categories", self.max_categories, integer=True)
        positive("zscore_threshold", self.zscore_threshold)
        positive("zscore_warmup", self.zscore_warmup, integer=True)
        positive("zscore_min_outliers", self.zscore_min_outliers, integer=True)
        if self.silence_after_s < 0:
            raise ConfigError(f"silence_after_s: {self.silence_after_s!r} must not be negative")
        positive("silence_min_s", self.silence_min_s)
        if self.max_segments < 0 or self.max_segments != int(self.max_segments):
            raise ConfigError(f"max_segments: {self.max_segments!r} must be a whole number, 0 or more")
        positive("min_slice_events", self.min_slice_events, integer=True)
        return self

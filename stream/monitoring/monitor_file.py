"""The monitor file: which detectors watch which signal, per model (TOML).

Every model gets the defaults; a ``[models."NAME"]`` table overrides them for
one model. Without a file, the built-in defaults below apply, so a model
nobody configured is still watched::

    # monitors.toml
    [defaults.signals.latency_ms]
    detectors = ["zscore", "iqr"]
    zscore = { threshold = 4.0, min_outliers = 5 }
    iqr = { k = 3.0 }

    [defaults.reference_drift]
    alpha = 0.001          # family-wise, Bonferroni-corrected over features
    min_psi = 0.1

    [models."fraud-scorer".signals."features.amount"]
    detectors = ["kswin"]
    kswin = { alpha = 0.0001, window_size = 200, stat_size = 50 }

    [models."fraud-scorer".performance]
    metric = "f1"
    margin = 0.03

    [models."faq-bot".clients]
    repeats_normal = true  # its users legitimately send the same few prompts

Signals: ``latency_ms``, ``error_rate`` (1 for a failed request, else 0),
``confidence``, ``prediction`` (numeric scores), ``tokens_in``,
``tokens_out``, ``features.NAME`` and ``features.*`` (every numeric
feature). Detectors: ``zscore`` and ``iqr`` (anomalies, counted per window),
``level_shift`` (abrupt jumps against the local spread) and ``cusum``
(sustained shifts against a baseline of the signal's first values), the
defaults for features, confidence and predictions; ``adwin``,
``page_hinkley`` and ``kswin`` (river's drift detectors on the event
stream), or your own class named ``"package.module:Class"`` (see
:func:`build_rule` for what it must provide). Reference drift and data quality watch every feature always; the
multivariate rule (``[defaults.multivariate] detectors = ["mahalanobis"]``,
on by default, ``[]`` turns it off) watches the numeric features together.
A mistake stops the worker with a message naming the setting's path.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.detectors.base import Finding, plain_series
from stream.detectors.cusum import PercentileCusumRule
from stream.detectors.iqr import IQRRule
from stream.detectors.level_shift import LevelShiftRule
from stream.detectors.performance import HIGHER_IS_BETTER
from stream.detectors.stream_drift import METHODS, StreamDriftRule
from stream.detectors.zscore import ZScoreRule
from stream.settings import ConfigError, DetectionSettings

FIXED_SIGNALS = ("latency_ms", "error_rate", "confidence", "prediction", "tokens_in", "tokens_out")
ANOMALY_RULES = {"zscore": ZScoreRule, "iqr": IQRRule}
# Change detectors of our own, with plain state; river's are in METHODS.
CHANGE_RULES = {"level_shift": LevelShiftRule, "cusum": PercentileCusumRule}
DRIFT_RULES = (*CHANGE_RULES, *METHODS)
# estimate = false: no estimate from confidence (for a model whose confidence is not a probability of being right).
PERFORMANCE_KEYS = {"metric": str, "margin": float, "window": int, "pos_label": (int, str, bool), "estimate": bool}
REFERENCE_DRIFT_KEYS = {"alpha": float, "min_psi": float, "min_events": int}
# Client abuse: ClientAbuseRule's parameters (repeats_normal turns the repeated-input check off).
CLIENT_KEYS = {
    "burst_factor": float,
    "min_burst": int,
    "new_client_factor": float,
    "swarm_factor": float,
    "min_swarm": int,
    "probe_factor": float,
    "min_probe": int,
    "duplicate_share": float,
    "min_duplicates": int,
    "repeats_normal": bool,
}

DEFAULTS: dict[str, Any] = {
    "signals": {
        # zscore for spikes; a lasting slowdown is a jump (level_shift) and a sustained shift (cusum).
        "latency_ms": {
            "detectors": ["zscore", "level_shift", "cusum"],
            "level_shift": {"direction": "up"},
            "cusum": {"direction": "up"},
        },
        "error_rate": {"detectors": ["adwin"], "adwin": {"direction": "up"}},
        "confidence": {"detectors": ["level_shift", "cusum"]},
        "prediction": {"detectors": ["level_shift", "cusum"]},
        "features.*": {"detectors": ["level_shift", "cusum"]},
    },
    "reference_drift": {},
    "performance": {},
    "multivariate": {"detectors": ["mahalanobis"]},
}
MULTIVARIATE_KEYS = {
    "warmup": int,
    "quantile": float,
    "margin": float,
    "half_life": float,
    "min_outliers": int,
    "min_share": float,
    "max_features": int,
    "alpha": float,
    "min_correlation_change": float,
    "min_events": int,
}


@dataclass(frozen=True)
class ModelMonitors:
    """What watches one model: detectors per signal, drift and performance options."""

    signals: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    reference_drift: dict[str, Any] = field(default_factory=dict)
    performance: dict[str, Any] = field(default_factory=dict)
    # Parameters of the multivariate (Mahalanobis) rule, or None when it is off.
    multivariate: dict[str, Any] | None = field(default_factory=dict)
    clients: dict[str, Any] = field(default_factory=dict)

    def detectors_for(self, signal: str) -> list[tuple[str, dict[str, Any]]]:
        """The detectors of ``signal``; ``features.*`` covers features without their own entry."""
        if signal in self.signals:
            return self.signals[signal]
        if signal.startswith("features."):
            return self.signals.get("features.*", [])
        return []


def build_rule(signal: str, name: str, params: dict[str, Any], window_s: float, path: str = "") -> Any:
    """One detector instance; a bad parameter raises :class:`ConfigError` naming ``path``."""
    params = dict(params)
    unit = "ms" if signal == "latency_ms" else ""
    if ":" in name:
        return _build_custom_rule(signal, name, params, window_s, path)
    try:
        if name in ANOMALY_RULES:
            cls = ANOMALY_RULES[name]
            if name == "zscore":
                params.setdefault("log_scale", signal == "latency_ms")
            return cls(signal, window_s=window_s, unit=unit, **params)
        if name in CHANGE_RULES:
            return CHANGE_RULES[name](signal, window_s=window_s, **params)
        if name in METHODS:
            return StreamDriftRule(signal, name, window_s=window_s, **params)
    except TypeError as exc:
        known = _known_parameters(name)
        raise ConfigError(f"{path}: {exc}; known parameters: {', '.join(known)}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    raise ConfigError(f"{path}: unknown detector {name!r}; known: {', '.join([*ANOMALY_RULES, *DRIFT_RULES])}")


def _build_custom_rule(signal: str, name: str, params: dict[str, Any], window_s: float, path: str) -> Any:
    """A detector of the user's own, ``"package.module:Class"``.

    The class is built as ``Class(signal, window_s=..., **params)`` and must
    have ``update(values, times) -> list[Finding]``, ``to_dict()`` and
    ``load_state(state)``, like the built-in rules.
    """
    module_name, _, attr = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{path}: cannot load detector {name!r} ({exc})") from None
    missing = [m for m in ("update", "to_dict", "load_state") if not callable(getattr(cls, m, None))]
    if missing:
        raise ConfigError(f"{path}: detector {name!r} lacks {', '.join(missing)}")
    try:
        return PlainListFeed(cls(signal, window_s=window_s, **params))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


class PlainListFeed:
    """A detector of one's own, fed lists of plain floats as the protocol promises; otherwise the detector itself.

    The built-in detectors take a batch's float64 arrays as they are. A class
    written against the protocol may test ``if not values`` or add lists,
    which arrays do not allow.
    """

    def __init__(self, rule: Any) -> None:
        self.rule = rule

    def update(self, values: Sequence[float], timestamps: Sequence[float]) -> list[Finding]:
        return self.rule.update(*plain_series(values, timestamps))

    def __getattr__(self, name: str) -> Any:
        if name == "rule":  # a copy being built, before its __init__
            raise AttributeError(name)
        return getattr(self.rule, name)


def _known_parameters(name: str) -> list[str]:
    extra: list[str] = []
    if name in ANOMALY_RULES:
        fn = ANOMALY_RULES[name].__init__
    elif name in CHANGE_RULES:
        fn = CHANGE_RULES[name].__init__
    else:
        fn = METHODS[name]().__init__
        extra = ["direction", "warmup", "standardize"]
    names = [p for p in inspect.signature(fn).parameters if p not in ("self", "signal", "window_s", "unit", "kind")]
    return sorted(set(names + extra))


class MonitorConfig:
    """The parsed monitor file (or the built-in defaults)."""

    def __init__(self, data: dict[str, Any] | None = None, source: str = "built-in defaults") -> None:
        data = data or {}
        self.source = source
        unknown = set(data) - {"defaults", "models"}
        if unknown:
            raise ConfigError(
                f"{source}: unknown top-level table(s) {', '.join(sorted(unknown))}; use defaults, models"
            )
        defaults = _merge(copy.deepcopy(DEFAULTS), data.get("defaults", {}))
        self.defaults = self._parse(defaults, "defaults")
        self.models: dict[str, ModelMonitors] = {}
        for model, table in (data.get("models") or {}).items():
            if not isinstance(table, dict):
                raise ConfigError(f"models.{model}: must be a table")
            self.models[model] = self._parse(_merge(copy.deepcopy(defaults), table), f"models.{model}")

    @classmethod
    def load(cls, path: Path) -> MonitorConfig:
        """Read a TOML monitor file; raise :class:`ConfigError` on any mistake."""
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"monitors: cannot read {path} ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"monitors: {path} is not valid TOML ({exc})") from None
        return cls(data, str(path))

    def for_model(self, model: str) -> ModelMonitors:
        """The monitors of ``model`` (its own table, else the defaults)."""
        return self.models.get(model, self.defaults)

    def _parse(self, table: dict[str, Any], where: str) -> ModelMonitors:
        unknown = set(table) - {"signals", "reference_drift", "performance", "multivariate", "clients"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        signals: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for signal, spec in (table.get("signals") or {}).items():
            path = f"{where}.signals.{signal}"
            if signal not in FIXED_SIGNALS and not signal.startswith("features."):
                raise ConfigError(
                    f"{path}: unknown signal; use {', '.join(FIXED_SIGNALS)}, features.NAME or features.*"
                )
            if not isinstance(spec, dict) or not isinstance(spec.get("detectors", []), list):
                raise ConfigError(f"{path}.detectors: must be a list of detector names")
            chosen = []
            for name in spec.get("detectors", []):
                params = spec.get(name, {})
                if not isinstance(params, dict):
                    raise ConfigError(f"{path}.{name}: parameters must be a table")
                build_rule(signal, name, params, 60.0, f"{path}.{name}")  # fail now, not at the first event
                chosen.append((name, params))
            leftovers = set(spec) - {"detectors"} - set(spec.get("detectors", []))
            if leftovers:
                raise ConfigError(
                    f"{path}: parameters for detector(s) not listed in detectors: {', '.join(sorted(leftovers))}"
                )
            signals[signal] = chosen
        return ModelMonitors(
            signals=signals,
            reference_drift=_typed(
                table.get("reference_drift") or {}, REFERENCE_DRIFT_KEYS, f"{where}.reference_drift"
            ),
            performance=_typed(table.get("performance") or {}, PERFORMANCE_KEYS, f"{where}.performance"),
            multivariate=self._multivariate(table.get("multivariate") or {}, f"{where}.multivariate"),
            clients=_typed(table.get("clients") or {}, CLIENT_KEYS, f"{where}.clients"),
        )

    def _multivariate(self, table: dict[str, Any], where: str) -> dict[str, Any] | None:
        detectors = table.get("detectors", [])
        if detectors not in ([], ["mahalanobis"]):
            raise ConfigError(f'{where}.detectors: {detectors!r}; use ["mahalanobis"] or [] to turn it off')
        if not detectors:
            return None
        params = table.get("mahalanobis", {})
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.mahalanobis: parameters must be a table")
        return _typed(params, MULTIVARIATE_KEYS, f"{where}.mahalanobis")


def _typed(table: dict[str, Any], keys: dict[str, Any], where: str) -> dict[str, Any]:
    for key, value in table.items():
        if key not in keys:
            raise ConfigError(f"{where}.{key}: unknown key; known: {', '.join(keys)}")
        expected = keys[key]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, expected):
            raise ConfigError(f"{where}.{key}: {value!r} has the wrong type")
    if "metric" in table and table["metric"] not in ("accuracy", "precision", "recall", "f1", "mae", "rmse"):
        raise ConfigError(f"{where}.metric: {table['metric']!r} is not one of {', '.join(HIGHER_IS_BETTER)}")
    return dict(table)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Override ``base`` table by table; a signal given in ``override`` replaces the default one."""
    for key, value in override.items():
        if key == "signals" and isinstance(value, dict):
            base.setdefault("signals", {}).update(value)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def build_signal_rules(signal: str, config: ModelMonitors, detection: DetectionSettings) -> dict[str, Any]:
    """The detectors the monitor file gives ``signal``, by name, over the worker-wide z-score settings."""
    rules = {}
    for name, params in config.detectors_for(signal):
        if name == "zscore":
            params = {
                "threshold": detection.zscore_threshold,
                "warmup": detection.zscore_warmup,
                "min_outliers": detection.zscore_min_outliers,
                **params,
            }
        rules[name] = build_rule(signal, name, params, detection.window_s, f"{signal}.{name}")
    return rules

"""The per-signal series a version's stream detectors are fed: latency, errors, model outputs and features."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from stream.monitoring.monitor_file import ModelMonitors
from stream.stats.columns import FeatureColumns, is_numeric

_NUMBERS = frozenset({float, int})


def signal_series(
    events: list[dict[str, Any]], columns: FeatureColumns, config: ModelMonitors, feature_names: Iterable[str]
) -> list[tuple[str, list[float], list[float]]]:
    """Each watched signal's values in ``events``, with their event times; only signals some detector watches.

    ``latency_ms`` and ``error_rate`` always; ``confidence``, ``prediction`` and
    token counts, and ``features.NAME``, when the monitor file (or the
    defaults) give them a detector. Missing values are left out.
    """
    times = [e["timestamp"] for e in events]
    out = [
        ("latency_ms", [e["latency_ms"] for e in events], times),
        ("error_rate", [1.0 if e.get("error") else 0.0 for e in events], times),
    ]
    for name in ("confidence", "prediction", "tokens_in", "tokens_out"):
        if not config.detectors_for(name):
            continue
        values = [e.get(name) for e in events]
        if _NUMBERS.issuperset(map(type, values)):
            # The usual case: every event has a number (ints and floats only: a bool is no number here).
            out.append((name, np.array(values, dtype=np.float64).tolist(), times))
            continue
        present = [i for i, v in enumerate(values) if is_numeric(v)]
        if present:
            out.append((name, [float(values[i]) for i in present], [times[i] for i in present]))
    if any(s.startswith("features.") for s in config.signals):
        stamps = np.asarray(times)
        for feature in feature_names:
            signal = f"features.{feature}"
            if not config.detectors_for(signal):
                continue
            column = columns.get(feature)
            present = ~np.isnan(column)
            if present.any():
                out.append((signal, column[present].tolist(), stamps[present].tolist()))
    return out

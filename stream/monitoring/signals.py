"""The per-signal series a version's stream detectors are fed: latency, errors, model outputs and features."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from stream.monitoring.monitor_file import ModelMonitors
from stream.stats.columns import BatchColumns, is_numeric


def signal_series(
    events: list[dict[str, Any]], columns: BatchColumns, config: ModelMonitors, feature_names: Iterable[str]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Each watched signal's values in ``events``, with their event times; only signals some detector watches.

    ``latency_ms`` and ``error_rate`` always; ``confidence``, ``prediction`` and
    token counts, and ``features.NAME``, when the monitor file (or the
    defaults) give them a detector. Missing values are left out. Values and
    times are float64 arrays: the detectors compute on arrays, and a list
    between here and there was converted twice per signal and batch.
    """
    times = columns.field("timestamp")
    out = [
        ("latency_ms", columns.field("latency_ms"), times),
        ("error_rate", columns.failed().astype(np.float64), times),
    ]
    for name in ("confidence", "prediction", "tokens_in", "tokens_out"):
        if not config.detectors_for(name):
            continue
        # A batch of classes (not numbers) is not worth a column: its first value tells.
        column = columns.field(name) if events and is_numeric(events[0].get(name)) else None
        if column is not None and not np.isnan(column).any():
            # The usual case: every event has a number (a bool is no number here).
            out.append((name, column, times))
            continue
        values = [e.get(name) for e in events]
        present = [i for i, v in enumerate(values) if is_numeric(v)]
        if present:
            out.append((name, np.array([float(values[i]) for i in present]), times[present]))
    if any(s.startswith("features.") for s in config.signals):
        for feature in feature_names:
            signal = f"features.{feature}"
            if not config.detectors_for(signal):
                continue
            column = columns.get(feature)
            present = ~np.isnan(column)
            if present.any():
                out.append((signal, column[present], times[present]))
    return out

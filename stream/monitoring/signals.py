"""The per-signal series a version's stream detectors are fed: latency, errors, model outputs and features."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from stream.monitoring.monitor_file import ModelMonitors
from stream.stats.columns import BatchColumns, is_numeric


def signal_series(
    events: list[dict[str, Any]], columns: BatchColumns, config: ModelMonitors, feature_names: Iterable[str]
) -> list[tuple[str, list[float], list[float]]]:
    """Each watched signal's values in ``events``, with their event times; only signals some detector watches.

    ``latency_ms`` and ``error_rate`` always; ``confidence``, ``prediction`` and
    token counts, and ``features.NAME``, when the monitor file (or the
    defaults) give them a detector. Missing values are left out.
    """
    stamps = columns.field("timestamp")
    times = stamps.tolist()
    out = [
        ("latency_ms", columns.field("latency_ms").tolist(), times),
        ("error_rate", [1.0 if e.get("error") else 0.0 for e in events], times),
    ]
    for name in ("confidence", "prediction", "tokens_in", "tokens_out"):
        if not config.detectors_for(name):
            continue
        # A batch of classes (not numbers) is not worth a column: its first value tells.
        column = columns.field(name) if events and is_numeric(events[0].get(name)) else None
        if column is not None and not np.isnan(column).any():
            # The usual case: every event has a number (a bool is no number here).
            out.append((name, column.tolist(), times))
            continue
        values = [e.get(name) for e in events]
        present = [i for i, v in enumerate(values) if is_numeric(v)]
        if present:
            out.append((name, [float(values[i]) for i in present], [times[i] for i in present]))
    if any(s.startswith("features.") for s in config.signals):
        for feature in feature_names:
            signal = f"features.{feature}"
            if not config.detectors_for(signal):
                continue
            column = columns.get(feature)
            present = ~np.isnan(column)
            if present.any():
                out.append((signal, column[present].tolist(), stamps[present].tolist()))
    return out

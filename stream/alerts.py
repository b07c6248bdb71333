"""Alert messages: stable fingerprints and the contract in alert.schema.json.

Severity policy (first cut; the detection work refines it):

- ``critical``: the signal is far past its threshold (twice the z threshold)
  or a large share of the window (10 % or more) is affected;
- ``warning``: the threshold is crossed by enough events to count;
- ``info``: informational findings that page nobody.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

from stream.detectors.base import Finding
from stream.schemas import SCHEMA_VERSION


def fingerprint(model: str, model_version: str, signal: str, detector: str) -> str:
    """Stable id of one alert series: same inputs, same fingerprint, on any worker.

    >>> fingerprint("m", "1", "latency_ms", "zscore") == fingerprint("m", "1", "latency_ms", "zscore")
    True
    >>> len(fingerprint("m", "1", "latency_ms", "zscore"))
    32
    """
    text = "\x1f".join((model, model_version, signal, detector))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def build_alert(
    finding: Finding,
    model: str,
    model_version: str,
    *,
    status: str = "firing",
    now: float | None = None,
) -> dict[str, Any]:
    """The alert message for ``finding`` about one model version."""
    return {
        "schema_version": SCHEMA_VERSION,
        "alert_id": uuid.uuid4().hex,
        "fingerprint": fingerprint(model, model_version, finding.signal, finding.detector),
        "status": status,
        "severity": finding.severity,
        "kind": finding.kind,
        "model": model,
        "model_version": model_version,
        "signal": finding.signal,
        "detector": finding.detector,
        "window": finding.window,
        "value": finding.value,
        "threshold": finding.threshold,
        "baseline": finding.baseline,
        "message": f"{model} {model_version}: {finding.message}",
        "evidence": finding.evidence,
        "timestamp": time.time() if now is None else now,
        "event_time": finding.event_time,
    }


def format_alert(alert: dict[str, Any]) -> str:
    """One readable line for a terminal.

    >>> print(format_alert({"event_time": 0, "status": "firing", "severity": "critical",
    ...     "kind": "anomaly", "model": "m", "model_version": "1", "signal": "latency_ms",
    ...     "detector": "zscore", "message": "m 1: slow"}))
    00:00:00 FIRING critical anomaly m 1 latency_ms/zscore: m 1: slow
    """
    when = time.strftime("%H:%M:%S", time.gmtime(alert.get("event_time", 0)))
    return (
        f"{when} {alert['status'].upper()} {alert['severity']} {alert['kind']} "
        f"{alert['model']} {alert['model_version']} {alert['signal']}/{alert['detector']}: "
        f"{alert['message']}"
    )

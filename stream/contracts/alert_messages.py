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
from typing import Any

from stream.contracts import SCHEMA_VERSION
from stream.detectors.base import Finding


def fingerprint(model: str, model_version: str, signal: str, detector: str, segment: str | None = None) -> str:
    """Stable id of one alert series: same inputs, same fingerprint, on any worker.

    A segment's alerts are series of their own (a model-wide alert has no segment).

    >>> fingerprint("m", "1", "latency_ms", "zscore") == fingerprint("m", "1", "latency_ms", "zscore")
    True
    >>> fingerprint("m", "1", "latency_ms", "zscore") == fingerprint("m", "1", "latency_ms", "zscore", "eu")
    False
    >>> len(fingerprint("m", "1", "latency_ms", "zscore"))
    32
    """
    parts = (
        (model, model_version, signal, detector)
        if segment is None
        else (model, model_version, signal, detector, segment)
    )
    text = "\x1f".join(parts)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def alert_id(fingerprint: str, status: str, event_time: float) -> str:
    """Id of one published alert, derived from what it says, not drawn at random.

    A worker that replays records after a crash or a rebalance raises the same
    alert at the same event time again; with the same id, consumers drop the copy.

    >>> alert_id("f", "firing", 10.0) == alert_id("f", "firing", 10.0) != alert_id("f", "resolved", 10.0)
    True
    """
    text = f"{fingerprint}\x1f{status}\x1f{event_time!r}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def identity_time(finding: Finding) -> float:
    """The time an alert's id is derived from: one that does not depend on how records were batched.

    A finding of a per-window rule (at most one per window and fingerprint) is
    identified by its window's start: the event at which a window's count
    crosses a threshold depends on where batches end. Stream detectors report
    the event they fired on, which does not.

    >>> from stream.detectors.base import Finding
    >>> window = {"type": "tumbling", "start": 60.0, "end": 120.0, "size_s": 60.0}
    >>> identity_time(Finding("x", "zscore", "anomaly", "warning", 1.0, 1.0, {}, "m", 97.5, window))
    60.0
    """
    if finding.window.get("type") == "tumbling":
        return float(finding.window["start"])
    return finding.event_time


def where_to_look(kind: str, signal: str) -> str:
    """The first place an on-call engineer should look, for alerts whose detector does not say it itself.

    >>> where_to_look("anomaly", "latency_ms")
    "Look at the service: a recent deploy, its dependencies' latency, its CPU and memory."
    >>> where_to_look("drift", "features.amount").startswith("Look at what feeds this input")
    True
    """
    if signal == "latency_ms":
        return "Look at the service: a recent deploy, its dependencies' latency, its CPU and memory."
    if signal == "error_rate":
        return "Look at the service's error logs and at its dependencies."
    if kind == "performance":
        return "Look at the labelled mistakes since the change: a shifted input, new traffic, stale training data."
    if kind == "resource":
        return "Look at the serving host: memory growth per request, other processes, the container's limits."
    if kind == "security":
        return "Look at this window's outputs and the output filters (the values are withheld here)."
    if signal.startswith("features") or signal in ("confidence", "prediction", "tokens_in", "tokens_out"):
        return (
            "Look at what feeds this input upstream (a deploy, a data source, a changed encoding) "
            "and whether the model still sees the traffic it was trained on."
        )
    return "Look at what changed upstream at that time."


def build_alert(
    finding: Finding,
    model: str,
    model_version: str,
    *,
    status: str = "firing",
    now: float | None = None,
    segment: str | None = None,
) -> dict[str, Any]:
    """The alert message for ``finding`` about one model version (and one of its segments, if given)."""
    fp = fingerprint(model, model_version, finding.signal, finding.detector, segment)
    where = f"{model} {model_version}" if segment is None else f"{model} {model_version} segment {segment}"
    alert = {
        "schema_version": SCHEMA_VERSION,
        "alert_id": alert_id(fp, status, identity_time(finding)),
        "fingerprint": fp,
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
        "message": _with_where_to_look(f"{where}: {finding.message}", finding),
        "evidence": finding.evidence,
        "timestamp": time.time() if now is None else now,
        "event_time": finding.event_time,
    }
    if segment is not None:
        alert["segment"] = segment
    return alert


def _with_where_to_look(message: str, finding: Finding) -> str:
    return f"{message.rstrip()} {finding.where_to_look or where_to_look(finding.kind, finding.signal)}"


def unreadable_state_alert(model: str, stored: bytes, reason: str, now: float | None = None) -> dict[str, Any]:
    """The one ``data_quality`` alert saying a model's stored state could not be read and monitoring restarted.

    Its id comes from the stored bytes, so a replay publishes the same alert.

    >>> a = unreadable_state_alert("m", b"junk", "model state version 1, this release reads 2", now=5.0)
    >>> a["kind"], a["detector"], a["status"], a["alert_id"] == unreadable_state_alert("m", b"junk", "x")["alert_id"]
    ('data_quality', 'state_unreadable', 'firing', True)
    """
    now = time.time() if now is None else now
    finding = Finding(
        signal="state",
        detector="state_unreadable",
        kind="data_quality",
        severity="warning",
        value=None,
        threshold=None,
        baseline={},
        message=(
            f"its stored monitoring state could not be read ({reason}); "
            "monitoring started afresh: references, baselines and counts are learnt again."
        ),
        event_time=now,
        window={"type": "stream", "start": now, "end": now},
        evidence={"reason": reason[:500], "state_bytes": len(stored)},
    )
    alert = build_alert(finding, model, "*", now=now)
    alert["alert_id"] = hashlib.blake2b(alert["fingerprint"].encode() + stored, digest_size=16).hexdigest()
    return alert


def format_alert(alert: dict[str, Any]) -> str:
    """One readable line for a terminal.

    >>> print(format_alert({"event_time": 0, "status": "firing", "severity": "critical",
    ...     "kind": "anomaly", "model": "m", "model_version": "1", "signal": "latency_ms",
    ...     "detector": "zscore", "message": "m 1: slow"}))
    00:00:00 FIRING critical anomaly m 1 latency_ms/zscore: slow
    """
    when = time.strftime("%H:%M:%S", time.gmtime(alert.get("event_time", 0)))
    # The message names the model and version for pagers that show it alone; the line has them already.
    message = alert["message"].removeprefix(f"{alert['model']} {alert['model_version']}: ")
    return (
        f"{when} {alert['status'].upper()} {alert['severity']} {alert['kind']} "
        f"{alert['model']} {alert['model_version']} {alert['signal']}/{alert['detector']}: {message}"
    )

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

from stream.detectors.base import Finding
from stream.schemas import SCHEMA_VERSION

# New changes of one fingerprint published within one cooldown, at most.
MAX_CHANGES_PER_COOLDOWN = 10


def fingerprint(model: str, model_version: str, signal: str, detector: str) -> str:
    """Stable id of one alert series: same inputs, same fingerprint, on any worker.

    >>> fingerprint("m", "1", "latency_ms", "zscore") == fingerprint("m", "1", "latency_ms", "zscore")
    True
    >>> len(fingerprint("m", "1", "latency_ms", "zscore"))
    32
    """
    text = "\x1f".join((model, model_version, signal, detector))
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


def build_alert(
    finding: Finding,
    model: str,
    model_version: str,
    *,
    status: str = "firing",
    now: float | None = None,
) -> dict[str, Any]:
    """The alert message for ``finding`` about one model version."""
    fp = fingerprint(model, model_version, finding.signal, finding.detector)
    return {
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
        "message": f"{model} {model_version}: {finding.message}",
        "evidence": finding.evidence,
        "timestamp": time.time() if now is None else now,
        "event_time": finding.event_time,
    }


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
    00:00:00 FIRING critical anomaly m 1 latency_ms/zscore: m 1: slow
    """
    when = time.strftime("%H:%M:%S", time.gmtime(alert.get("event_time", 0)))
    return (
        f"{when} {alert['status'].upper()} {alert['severity']} {alert['kind']} "
        f"{alert['model']} {alert['model_version']} {alert['signal']}/{alert['detector']}: "
        f"{alert['message']}"
    )


class AlertLifecycle:
    """Firing, folding and resolving of the alerts of one model version.

    - The first finding of a fingerprint publishes a ``firing`` alert.
    - Findings of the same fingerprint within ``cooldown_s`` of event time
      after the last published one are folded: counted, not published. After
      the cooldown the next one is published again, with ``evidence.repeats``.
      A finding whose ``change_started_at`` is after the last published
      alert reports a new change and is published (up to
      ``MAX_CHANGES_PER_COOLDOWN`` per cooldown).
    - Alerts about one signal share an ``incident`` key from the first finding
      until every detector of it has resolved: one episode, one incident,
      whatever number of detectors agree (they are listed in
      ``evidence.incident.detectors``).
    - A firing alert whose detector has been quiet for ``resolve_after_s`` of
      event time, while events kept arriving, publishes ``resolved`` with the
      same fingerprint and severity, so routes that paged also clear.

    >>> from stream.detectors.base import Finding
    >>> f = lambda t: Finding("latency_ms", "zscore", "anomaly", "warning", 5.0, 4.0, {}, "slow", t,
    ...                       {"type": "tumbling", "start": 0.0, "end": 60.0, "size_s": 60.0})
    >>> life = AlertLifecycle("m", "1", cooldown_s=300, resolve_after_s=120)
    >>> [a["status"] for a in life.observe([f(10.0)], 10.0)]
    ['firing']
    >>> life.observe([f(70.0)], 70.0)          # folded into the first
    []
    >>> [a["status"] for a in life.observe([], 200.0)]
    ['resolved']
    """

    def __init__(
        self,
        model: str,
        model_version: str,
        *,
        cooldown_s: float = 300.0,
        resolve_after_s: float = 120.0,
        sustained_s: float = 900.0,
    ) -> None:
        self.model = model
        self.model_version = model_version
        self.cooldown_s = cooldown_s
        self.resolve_after_s = resolve_after_s
        self.sustained_s = sustained_s
        # Retraining requests raised by the last observe(), for the caller to publish.
        self.retrain_requests: list[dict[str, Any]] = []
        # fingerprint -> what is needed to fold and to resolve it
        self.active: dict[str, dict[str, Any]] = {}
        # signal -> its open incident: key, since, the detectors that agreed, the fingerprints still firing
        self.incidents: dict[str, dict[str, Any]] = {}

    def observe(self, findings: list[Finding], event_time: float) -> list[dict[str, Any]]:
        """Feed this batch's findings (possibly none) at ``event_time``; return alerts to publish."""
        out: list[dict[str, Any]] = []
        for finding in findings:
            fp = fingerprint(self.model, self.model_version, finding.signal, finding.detector)
            incident = self._incident(finding, fp)
            state = self.active.get(fp)
            in_cooldown = state is not None and finding.event_time - state["last_published"] < self.cooldown_s
            if state is not None:
                state["last_seen"] = finding.event_time
                state["last_identity"] = identity_time(finding)
                self._maybe_request_retraining(state, finding)
                if in_cooldown and not self._new_change(state, finding):
                    state["folded"] += 1
                    continue
            alert = build_alert(finding, self.model, self.model_version)
            alert["incident"] = incident["key"]
            alert["evidence"] = {
                **alert["evidence"],
                "incident": {"since": incident["since"], "detectors": list(incident["detectors"])},
            }
            if state is not None:
                alert["evidence"] = {**alert["evidence"], "repeats": state["folded"], "firing_since": state["since"]}
            self.active[fp] = {
                "since": state["since"] if state else finding.event_time,
                "last_seen": finding.event_time,
                "last_identity": identity_time(finding),
                "last_published": state["last_published"] if in_cooldown else finding.event_time,
                "changes_in_cooldown": state["changes_in_cooldown"] + 1 if in_cooldown else 0,
                "folded": 0,
                "alert": alert,
                "retrain_requested": bool(state and state.get("retrain_requested")),
            }
            out.append(alert)
        for fp, state in list(self.active.items()):
            if event_time - state["last_seen"] >= self.resolve_after_s:
                out.append(self._resolved(state, event_time))
                del self.active[fp]
                signal = state["alert"]["signal"]
                incident = self.incidents.get(signal)
                if incident is not None:
                    incident["open"] = [f for f in incident["open"] if f != fp]
                    if not incident["open"]:
                        del self.incidents[signal]  # every detector of the episode is quiet: it is over
        return out

    def _incident(self, finding: Finding, fp: str) -> dict[str, Any]:
        """The open incident of ``finding``'s signal (opened by this finding if there is none), updated.

        Its key depends only on the model, version, signal and the event time of
        the finding that opened it, so a replay gives the same key.
        """
        incident = self.incidents.get(finding.signal)
        if incident is None:
            text = "\x1f".join((self.model, self.model_version, finding.signal, repr(finding.event_time)))
            key = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
            incident = self.incidents[finding.signal] = {
                "key": key,
                "since": finding.event_time,
                "detectors": [],
                "open": [],
            }
        if finding.detector not in incident["detectors"]:
            incident["detectors"].append(finding.detector)
        if fp not in incident["open"]:
            incident["open"].append(fp)
        return incident

    def _new_change(self, state: dict[str, Any], finding: Finding) -> bool:
        """Whether ``finding`` reports a change that began after the last alert published (not a repeat).

        Change detectors that re-baseline report each change once, so such a
        finding is news even within the cooldown; at most ``MAX_CHANGES_PER_COOLDOWN``
        of them are published per cooldown, so a flapping signal cannot flood a pager.
        """
        started = finding.evidence.get("change_started_at")
        return (
            started is not None
            and started > state["alert"]["event_time"]
            and state["changes_in_cooldown"] < MAX_CHANGES_PER_COOLDOWN
        )

    def _maybe_request_retraining(self, state: dict[str, Any], finding: Finding) -> None:
        if finding.kind not in ("drift", "performance") or state.get("retrain_requested"):
            return
        lasted = finding.event_time - state["since"]
        if lasted < self.sustained_s:
            return
        state["retrain_requested"] = True
        self.retrain_requests.append(
            {
                "schema_version": SCHEMA_VERSION,
                "request_id": alert_id(state["alert"]["alert_id"], "retrain", identity_time(finding)),
                "model": self.model,
                "model_version": self.model_version,
                "reason": finding.kind,
                "signal": finding.signal,
                "detector": finding.detector,
                "since": state["since"],
                "event_time": finding.event_time,
                "alert_id": state["alert"]["alert_id"],
                "message": (
                    f"{self.model} {self.model_version}: {finding.kind} of {finding.signal} ({finding.detector}) "
                    f"has lasted {lasted / 60:.0f} min; retraining requested."
                ),
                "evidence": {"value": finding.value, "threshold": finding.threshold},
                "timestamp": time.time(),
            }
        )

    def take_retrain_requests(self) -> list[dict[str, Any]]:
        """The retraining requests raised since the last call."""
        out, self.retrain_requests = self.retrain_requests, []
        return out

    def _resolved(self, state: dict[str, Any], event_time: float) -> dict[str, Any]:
        firing = state["alert"]
        quiet = event_time - state["last_seen"]
        # Resolvable from the moment the quiet period was complete: that, not the batch that noticed, is its id.
        resolvable_at = state["last_identity"] + self.resolve_after_s
        return {
            **firing,
            "alert_id": alert_id(firing["fingerprint"], "resolved", resolvable_at),
            "status": "resolved",
            "message": (
                f"{self.model} {self.model_version}: resolved: {firing['signal']}/{firing['detector']} "
                + (
                    # A change detector re-baselines: quiet means no further change, not the old level back.
                    "saw no further change; the level since the change is now its baseline"
                    if firing["evidence"].get("change_started_at") is not None
                    else "back to normal"
                )
                + f"; no finding for {quiet:.0f} s of event time "
                f"(firing since {time.strftime('%H:%M:%S', time.gmtime(state['since']))} UTC)."
            ),
            "evidence": {"firing_alert_id": firing["alert_id"], "firing_since": state["since"], "quiet_s": quiet},
            "timestamp": time.time(),
            "event_time": event_time,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state, detached from the live one (a saved state must not change afterwards)."""
        return {
            "active": {fp: dict(state) for fp, state in self.active.items()},
            "incidents": {
                signal: {**incident, "detectors": list(incident["detectors"]), "open": list(incident["open"])}
                for signal, incident in self.incidents.items()
            },
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        self.active = {fp: dict(entry) for fp, entry in state["active"].items()}
        self.incidents = {
            signal: {**incident, "detectors": list(incident["detectors"]), "open": list(incident["open"])}
            for signal, incident in state["incidents"].items()
        }

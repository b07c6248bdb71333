"""The lifecycle of one model version's alerts: firing, folded repeats, incidents, resolving."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from stream.contracts import SCHEMA_VERSION
from stream.contracts.alert_messages import alert_id, build_alert, fingerprint, identity_time
from stream.detectors.base import Finding
from stream.settings import DetectionSettings

# New changes of one fingerprint published within one cooldown, at most.
MAX_CHANGES_PER_COOLDOWN = 10


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
        segment: str | None = None,
    ) -> None:
        self.model = model
        self.model_version = model_version
        # The segment these alerts are about (None: the whole version).
        self.segment = segment
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
            fp = fingerprint(self.model, self.model_version, finding.signal, finding.detector, self.segment)
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
            alert = build_alert(finding, self.model, self.model_version, segment=self.segment)
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
        return out + self.resolve(event_time)

    def resolve(self, event_time: float, after_s: float | None = None) -> list[dict[str, Any]]:
        """Resolve the alerts whose detector has been quiet ``after_s`` (default ``resolve_after_s``) by ``event_time``.

        ``after_s=0`` resolves every firing alert: what it was about has ended.
        """
        after_s = self.resolve_after_s if after_s is None else after_s
        out = []
        for fp, state in list(self.active.items()):
            if event_time - state["last_seen"] >= after_s:
                out.append(self._resolved(state, event_time, after_s))
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
            parts = [self.model, self.model_version, finding.signal, repr(finding.event_time)]
            text = "\x1f".join(parts if self.segment is None else [*parts, self.segment])
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
            finding.change_point
            and started is not None
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

    def _resolved(self, state: dict[str, Any], event_time: float, after_s: float) -> dict[str, Any]:
        firing = state["alert"]
        quiet = event_time - state["last_seen"]
        # Resolvable from the moment the quiet period was complete: that, not the batch that noticed, is its id.
        resolvable_at = state["last_identity"] + after_s
        return {
            **firing,
            "alert_id": alert_id(firing["fingerprint"], "resolved", resolvable_at),
            "status": "resolved",
            "message": (
                f"{self.model} {self.model_version}"
                + ("" if self.segment is None else f" segment {self.segment}")
                + f": resolved: {firing['signal']}/{firing['detector']} "
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


def lifecycle(model: str, version: str, detection: DetectionSettings, segment: str | None = None) -> AlertLifecycle:
    """An alert lifecycle with the worker-wide cooldown, resolve delay and retraining delay."""
    return AlertLifecycle(
        model,
        version,
        cooldown_s=detection.alert_cooldown_s,
        resolve_after_s=detection.resolve_after_s or 2 * detection.window_s,
        sustained_s=detection.retrain_after_s,
        segment=segment,
    )

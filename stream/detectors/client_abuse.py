"""Client abuse: callers that burst, probe or repeat themselves, and swarms of rotated ids.

``ClientAbuseRule`` keeps a small state per ``client_id``: its request count
per window against its own baseline, its share of low-confidence answers
against the model's, and how many of its inputs repeat one another. Every
client, tracked or not, is also counted in a
:class:`~stream.stats.client_population.ClientPopulation` (bounded sketches),
so that a client without a history of its own is judged against the model's
usual per-client rate from its first window, and a swarm of callers (ids
rotated to stay under per-client limits) shows as a jump in distinct clients.
Client state is bounded: beyond ``max_clients``, a client heavier than the
lightest tracked one takes its place, idle clients are dropped first, and the
events of the others are counted as untracked.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import orjson

from stream.detectors.base import Finding, check_state_version, tumbling_window
from stream.stats.client_population import ClientPopulation
from stream.stats.columns import BatchColumns
from stream.stats.window_stats import window_start

# The layout of ClientAbuseRule.to_dict. Version 1 had no population sketches; it loads, and they start empty.
CLIENT_STATE_VERSION = 2
# Clients flagged against the model's norm in one window, remembered so each is flagged once (bounded).
MAX_NEWCOMERS_FLAGGED = 1000


def input_fingerprint(event: dict[str, Any]) -> str:
    """A short hash of what a request asked: features rounded to 3 significant digits, and the prompt.

    Near-duplicates (the same input with tiny numeric changes) share it.

    >>> a = {"features": {"x": 1.00001, "c": "a"}, "input_text": " Hi "}
    >>> b = {"features": {"x": 1.00002, "c": "a"}, "input_text": "hi"}
    >>> input_fingerprint(a) == input_fingerprint(b)
    True
    """
    features = event.get("features") or {}
    rounded = {k: _rounded(v) for k, v in features.items()}
    text = event.get("input_text")
    key = orjson.dumps([rounded, text.strip().lower() if isinstance(text, str) else None], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(key, digest_size=6).hexdigest()


def _rounded(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(f"{value:.3g}")
    return value


class ClientAbuseRule:
    """Per-client bursts, probing (low-confidence share) and near-duplicate inputs; swarms of clients; per window.

    A client with ``warmup_windows`` of its own history bursts past
    ``burst_factor`` x its own baseline; one without (new, or untracked among
    many) past ``new_client_factor`` x the model's usual requests per client,
    unless it was already half that heavy in the window before.
    Both need more than ``min_burst`` requests. A swarm is more than
    ``swarm_factor`` x the usual number of distinct clients in a window (and
    ``min_swarm`` more than usual). Nothing is judged before the model itself
    has ``warmup_windows`` windows of history.

    >>> rule = ClientAbuseRule(window_s=60, warmup_windows=2, min_burst=20)
    >>> ev = lambda t, client, x: {"timestamp": t, "client_id": client, "confidence": 0.9, "features": {"x": x}}
    >>> quiet = [ev(w * 60.0 + i, c, float(i)) for w in range(3) for c in ("a", "b") for i in range(10)]
    >>> rule.update(quiet)
    []
    >>> burst = [ev(180.0 + i * 0.1, "b", float(i)) for i in range(200)]
    >>> [(f.evidence["client_id"], f.evidence["reason"]) for f in rule.update(burst)]
    [('b', 'burst')]
    >>> newcomer = [ev(190.0 + i * 0.1, "new", float(i)) for i in range(300)]
    >>> [(f.evidence["client_id"], f.evidence["judged_against"]) for f in rule.update(newcomer)]
    [('new', 'model_per_client_norm')]
    """

    name = "client_abuse"

    def __init__(
        self,
        window_s: float = 60.0,
        *,
        burst_factor: float = 5.0,
        min_burst: int = 100,
        new_client_factor: float = 20.0,
        swarm_factor: float = 2.0,
        min_swarm: int = 200,
        warmup_windows: int = 3,
        low_confidence: float = 0.5,
        probe_factor: float = 3.0,
        min_probe: int = 30,
        duplicate_share: float = 0.5,
        min_duplicates: int = 30,
        repeats_normal: bool = False,
        max_clients: int = 100,
        idle_s: float = 3600.0,
        recent_inputs: int = 32,
        lg_max_items: int = 10,
        lg_distinct: int = 12,
        min_slice_events: int = 20,
    ) -> None:
        self.window_s = window_s
        self.burst_factor = burst_factor
        self.min_burst = min_burst
        self.new_client_factor = new_client_factor
        self.swarm_factor = swarm_factor
        self.min_swarm = min_swarm
        self.warmup_windows = warmup_windows
        self.low_confidence = low_confidence
        self.probe_factor = probe_factor
        self.min_probe = min_probe
        self.duplicate_share = duplicate_share
        self.min_duplicates = min_duplicates
        self.repeats_normal = repeats_normal
        self.max_clients = max_clients
        self.idle_s = idle_s
        self.recent_inputs = recent_inputs
        # A client finding about fewer requests than this is not published: it would describe one caller's few.
        self.min_slice_events = min_slice_events
        self.clients: dict[str, dict[str, Any]] = {}
        self.untracked_events = 0
        # The model's own share of low-confidence answers, over every client.
        self.model_low = 0.0
        self.model_seen = 0
        self.population = ClientPopulation(window_s, lg_max_items, lg_distinct)
        # What was flagged against the population in its current window: untracked clients, and "rotation".
        self.population_window: float | None = None
        self.population_fired: list[str] = []
        # The tracked client a heavier newcomer would replace, and its baseline (None: to be found again).
        self._lightest: tuple[str, float] | None = None
        self._idle_checked_at = -math.inf

    def _client(self, client_id: str, ts: float) -> dict[str, Any] | None:
        state = self.clients.get(client_id)
        if state is not None:
            return state
        seed = 0
        # Looking for idle clients once a window is enough: they have been idle for an hour.
        if len(self.clients) >= self.max_clients and ts - self._idle_checked_at >= self.window_s:
            self._idle_checked_at = ts
            for cid in [c for c, s in self.clients.items() if ts - s["last_seen"] > self.idle_s]:
                del self.clients[cid]
            self._lightest = None
        if len(self.clients) >= self.max_clients:
            # Heavy clients need a history of their own, or each would be judged against the model's norm.
            seed = self.population.requests_at_least(client_id)
            lightest = self._lightest_client()
            # Clients at the model's usual rate do not need a history: they are judged against that rate.
            if seed <= max(lightest[1], 2 * self.population.usual_requests_per_client, 1):
                self.untracked_events += 1
                return None
            del self.clients[lightest[0]]
            self._lightest = None
            # The request being counted is added by the caller.
            seed -= 1
        state = self.clients[client_id] = {
            "last_seen": ts,
            "window_start": window_start(ts, self.window_s),
            "count": seed,
            "low": 0,
            "dups": 0,
            "recent": [],
            "baseline": 0.0,
            "windows": 0,
            "fired": [],
        }
        return state

    def _lightest_client(self) -> tuple[str, float]:
        if self._lightest is None:
            cid = min(self.clients, key=lambda c: self.clients[c]["baseline"])
            self._lightest = (cid, self.clients[cid]["baseline"])
        return self._lightest

    def _roll(self, state: dict[str, Any], start: float) -> None:
        # A new window: the finished one's count feeds the client's baseline (missed windows count as 0).
        skipped = max(0, round((start - state["window_start"]) / self.window_s) - 1)
        for count in [state["count"]] + [0] * min(skipped, 10):
            state["windows"] += 1
            weight = 1.0 / min(state["windows"], 10)
            state["baseline"] += weight * (count - state["baseline"])
        state.update(window_start=start, count=0, low=0, dups=0, recent=[], fired=[])
        self._lightest = None

    def _learn_model_low(self, events: list[dict[str, Any]]) -> None:
        # The model's share of low-confidence answers, over the last few thousand, one batch at a time.
        lows = [c < self.low_confidence for e in events if isinstance(c := e.get("confidence"), int | float)]
        if lows:
            self.model_seen += len(lows)
            weight = min(1.0, len(lows) / min(self.model_seen, 5000))
            self.model_low += weight * (sum(lows) / len(lows) - self.model_low)

    def update(self, events: list[dict[str, Any]], columns: BatchColumns | None = None) -> list[Finding]:
        """Count each event against its client; return findings for clients that crossed a line."""
        callers = [e for e in events if isinstance(e.get("client_id"), str)]
        if not callers:
            return []  # a model whose callers are not named: nothing to track
        self._learn_model_low(events)
        out: list[Finding] = []
        for event in callers:
            client_id = event["client_id"]
            ts = event["timestamp"]
            self.population.add(client_id, ts)
            if self.population.window_start != self.population_window:
                self.population_window, self.population_fired = self.population.window_start, []
            state = self._client(client_id, ts)
            if state is None:
                if client_id not in self.population_fired:
                    out += self._check_against_norm(client_id, self.population.requests_at_least(client_id), ts)
                continue
            confidence = event.get("confidence")
            low = isinstance(confidence, int | float) and confidence < self.low_confidence
            start = window_start(ts, self.window_s)
            if start > state["window_start"]:
                self._roll(state, start)
            state["last_seen"] = max(state["last_seen"], ts)
            state["count"] += 1
            state["low"] += int(low)
            fingerprint = input_fingerprint(event)
            if fingerprint in state["recent"]:
                state["dups"] += 1
            else:
                state["recent"] = [*state["recent"][-(self.recent_inputs - 1) :], fingerprint]
            out += self._check(client_id, state, ts)
        return out + self._check_swarm(callers[-1]["timestamp"])

    def _check_against_norm(self, client_id: str, count: int, ts: float) -> list[Finding]:
        """A burst of a client without a history of its own, against the model's usual requests per client."""
        population = self.population
        if population.windows < self.warmup_windows:
            return []
        usual = population.usual_requests_per_client
        limit = max(self.min_burst, self.min_slice_events, self.new_client_factor * usual)
        # Already heavy last window: a regular whose own history was lost (evicted), not a newcomer.
        if count <= limit or population.previous_requests_estimate(client_id) >= limit / 2:
            return []
        if len(self.population_fired) < MAX_NEWCOMERS_FLAGGED:
            self.population_fired.append(client_id)
        state = self.clients.get(client_id)
        assert population.window_start is not None
        return [
            self._finding(
                "burst",
                float(count),
                limit,
                {"requests_per_client": round(usual, 2)},
                f"client {client_id}, without a history of its own, sent at least {count} requests this window, "
                f"{count / max(usual, 1e-9):.0f}x the model's usual {usual:.1f} per client (limit {limit:.0f}).",
                "A new caller at this rate is a scraper, a load test or a misconfigured job: look at who owns "
                "the id, and rate-limit it if no one does.",
                ts,
                population.window_start,
                {
                    "client_id": client_id,
                    "reason": "burst",
                    "judged_against": "model_per_client_norm",
                    "requests": count,
                    "low_confidence": 0 if state is None else state["low"],
                    "duplicates": 0 if state is None else state["dups"],
                },
            )
        ]

    def _check_swarm(self, ts: float) -> list[Finding]:
        population = self.population
        if population.windows < self.warmup_windows or "rotation" in self.population_fired:
            return []
        usual, distinct = population.usual_distinct, population.distinct_clients()
        limit = max(usual + self.min_swarm, self.swarm_factor * usual)
        if distinct <= limit:
            return []
        self.population_fired.append("rotation")
        per_client = population.requests / max(distinct, 1.0)
        assert population.window_start is not None
        return [
            self._finding(
                "rotation",
                distinct,
                limit,
                {
                    "distinct_clients": round(usual, 1),
                    "requests_per_client": round(population.usual_requests_per_client, 2),
                },
                f"{distinct:.0f} distinct clients this window, {distinct / max(usual, 1.0):.1f}x the usual "
                f"{usual:.0f}, at {per_client:.1f} requests each (usually "
                f"{population.usual_requests_per_client:.1f}).",
                "Many new ids at once: one caller rotating ids to stay under per-client limits, or a botnet. "
                "Look for what the requests share (network, user agent, API key) and limit at that level; a "
                "launch or a marketing push looks alike, so check those first.",
                ts,
                population.window_start,
                {
                    "reason": "rotation",
                    "distinct_clients": round(distinct),
                    "requests": population.requests,
                    "distinct_error": round(_hll_error(population.lg_distinct), 4),
                },
            )
        ]

    def _check(self, client_id: str, state: dict[str, Any], ts: float) -> list[Finding]:
        count, fired = state["count"], state["fired"]
        if count < self.min_slice_events:
            return []  # a finding would describe one caller's few requests
        found = []
        if "burst" not in fired and state["windows"] < self.warmup_windows and client_id not in self.population_fired:
            # Not enough history of its own: the model's norm judges it.
            out = self._check_against_norm(client_id, count, ts)
            if out:
                fired.append("burst")
                return out
        if "burst" not in fired and state["windows"] >= self.warmup_windows:
            limit = max(self.min_burst, self.burst_factor * state["baseline"])
            if count > limit:
                usual = state["baseline"]
                message = (
                    f"client {client_id} sent {count} requests this window, {count / max(usual, 1):.0f}x its "
                    f"usual {usual:.0f} (burst limit {limit:.0f})."
                )
                hint = (
                    "Look at what it sends: a retry loop, a batch job or a scraper; "
                    "rate-limit it if it is none of those."
                )
                found.append(("burst", count, limit, {"requests_per_window": round(usual, 1)}, message, hint))
        if "probing" not in fired and state["low"] >= self.min_probe:
            share, base = state["low"] / count, self.model_low
            if share > self.probe_factor * max(base, 0.01):
                found.append(
                    (
                        "probing",
                        share,
                        self.probe_factor * max(base, 0.01),
                        {"low_confidence_share": round(base, 4)},
                        f"client {client_id}: {share:.0%} of its {count} requests got low-confidence answers, "
                        f"where {base:.0%} is normal model-wide.",
                        "Look at its inputs: edge cases one after another suggest probing or model extraction.",
                    )
                )
        if not self.repeats_normal and "duplicates" not in fired and state["dups"] >= self.min_duplicates:
            share = state["dups"] / count
            if share >= self.duplicate_share:
                found.append(
                    (
                        "duplicates",
                        share,
                        self.duplicate_share,
                        {"duplicate_share": 0.0},
                        f"client {client_id}: {state['dups']} of its {count} requests this window repeat one of "
                        f"its recent inputs, where under {self.duplicate_share:.0%} is normal.",
                        "Look at the client: a retry loop or a replayed session; if this model's users legitimately "
                        "resend the same inputs, set repeats_normal = true under [models.NAME.clients] in the "
                        "monitor file.",
                    )
                )
        out = []
        for reason, value, threshold, baseline, message, hint in found:
            fired.append(reason)
            evidence = {
                "client_id": client_id,
                "reason": reason,
                "judged_against": "own_history" if reason == "burst" else "model",
                "requests": count,
                "low_confidence": state["low"],
                "duplicates": state["dups"],
            }
            out.append(
                self._finding(reason, value, threshold, baseline, message, hint, ts, state["window_start"], evidence)
            )
        return out

    def _finding(
        self,
        reason: str,
        value: float,
        threshold: float,
        baseline: dict[str, Any],
        message: str,
        hint: str,
        ts: float,
        start: float,
        evidence: dict[str, Any],
    ) -> Finding:
        return Finding(
            signal=f"client.{reason}",
            detector=self.name,
            kind="security",
            severity="warning",
            value=float(value),
            threshold=float(threshold),
            baseline=baseline,
            message=message,
            where_to_look=hint,
            event_time=ts,
            window=tumbling_window(start, self.window_s),
            evidence={
                **evidence,
                "tracked_clients": len(self.clients),
                "untracked_events": self.untracked_events,
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "state_version": CLIENT_STATE_VERSION,
            "clients": self.clients,
            "untracked_events": self.untracked_events,
            "model_low": self.model_low,
            "model_seen": self.model_seen,
            "population": self.population.to_dict(),
            "population_window": self.population_window,
            "population_fired": list(self.population_fired),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved (a version-1 state starts its population sketches empty)."""
        if state.get("state_version", 1) != 1:
            check_state_version(state, CLIENT_STATE_VERSION, "client_abuse")
        self.clients = {k: dict(v) for k, v in state["clients"].items()}
        self.untracked_events = state["untracked_events"]
        self.model_low, self.model_seen = state["model_low"], state["model_seen"]
        self._lightest = None
        if "population" in state:
            self.population.load_state(state["population"])
            self.population_window = state["population_window"]
            self.population_fired = list(state["population_fired"])


def _hll_error(lg_k: int) -> float:
    """HyperLogLog's relative standard error with 2^lg_k registers.

    >>> round(_hll_error(12), 4)
    0.0163
    """
    return 1.04 / (1 << lg_k) ** 0.5

"""``stream-monitor route``: forward alerts from Kafka to HTTP webhooks.

Each route has a URL, a body format (``json``: the alert as published;
``alertmanager``: Prometheus Alertmanager's ``POST /api/v2/alerts`` list),
and filters on model (glob patterns), kind and minimum severity. A failed
delivery (connection error, HTTP 429 or 5xx) is retried with exponential
backoff; an alert that still cannot be delivered, or that a receiver refuses
with another 4xx, goes to the dead-letter topic with the route and the last
answer as the reason. Offsets are committed only after every route has
delivered or dead-lettered the alert, so a router that dies loses nothing
(a receiver may see an alert twice: Alertmanager folds them; JSON receivers
can use ``alert_id``).

Alertmanager resolves an alert it has not heard of for its
``resolve_timeout`` (5 minutes by default), which is why Prometheus sends its
firing alerts again at every evaluation. The worker publishes an alert once
per episode, so the router keeps the alerts firing now (learnt from the
topic's history when it starts) and sends them again to every Alertmanager
route every ``resend_s``, until their ``resolved`` message comes.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream.contracts.codec import Reject
from stream.contracts.dead_letters import dead_letter
from stream.contracts.schemas import SchemaError, validate
from stream.kafka.follow import TopicReader
from stream.settings import ConfigError, Settings

log = logging.getLogger(__name__)

FORMATS = ("json", "alertmanager")
SEVERITIES = ("info", "warning", "critical")
KINDS = ("drift", "anomaly", "performance", "data_quality", "resource", "security", "traffic")


@dataclass(frozen=True)
class Route:
    """Where alerts go, in which format, and which alerts.

    >>> r = Route("pager", "http://pager/hook", models=("fraud-*",), min_severity="critical")
    >>> r.matches({"model": "fraud-scorer", "kind": "anomaly", "severity": "critical"})
    True
    >>> r.matches({"model": "fraud-scorer", "kind": "anomaly", "severity": "warning"})
    False
    """

    name: str
    url: str
    format: str = "json"
    models: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    min_severity: str = "info"
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, alert: dict[str, Any]) -> bool:
        """Whether ``alert`` passes this route's filters."""
        if self.models and not any(fnmatch.fnmatchcase(alert.get("model", ""), p) for p in self.models):
            return False
        if self.kinds and alert.get("kind") not in self.kinds:
            return False
        severity = alert.get("severity")
        return severity in SEVERITIES and SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity)

    def body(self, alert: dict[str, Any]) -> bytes:
        """The request body for ``alert`` in this route's format."""
        if self.format == "alertmanager":
            return orjson.dumps([alertmanager_alert(alert)])
        return orjson.dumps(alert)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def alertmanager_alert(alert: dict[str, Any], generator_url: str = "") -> dict[str, Any]:
    """One alert in Alertmanager's v2 API shape: labels identify it, annotations explain it.

    A resolved alert carries ``endsAt``, which tells Alertmanager it is over.

    >>> a = {"model": "m", "model_version": "1", "signal": "latency_ms", "detector": "zscore",
    ...      "kind": "anomaly", "severity": "critical", "status": "resolved", "message": "slow",
    ...      "fingerprint": "f1", "alert_id": "a1", "value": 412.0, "threshold": 4.0,
    ...      "timestamp": 1795392033.0, "event_time": 1795392033.0}
    >>> out = alertmanager_alert(a)
    >>> out["labels"]["alertname"], out["endsAt"], out["annotations"]["summary"]
    ('StreamMonitorAnomaly', '2026-11-23T00:00:33Z', 'slow')
    """
    labels = {
        "alertname": "StreamMonitor" + "".join(p.title() for p in alert["kind"].split("_")),
        "model": alert["model"],
        "model_version": alert["model_version"],
        "signal": alert["signal"],
        "detector": alert["detector"],
        "kind": alert["kind"],
        "severity": alert["severity"],
        "fingerprint": alert["fingerprint"],
    }
    if alert.get("incident"):
        # Group by it in Alertmanager's route (group_by: [incident]): one page per episode.
        labels["incident"] = alert["incident"]
    if alert.get("segment"):
        labels["segment"] = alert["segment"]
    out: dict[str, Any] = {
        "labels": labels,
        "annotations": {
            "summary": alert["message"],
            "value": str(alert.get("value")),
            "threshold": str(alert.get("threshold")),
            "alert_id": alert["alert_id"],
            "event_time": _rfc3339(alert["event_time"]),
        },
        # When the monitor raised it, not the event time it is about: Alertmanager sends a new group at
        # once, without its group_wait, when the first alert's startsAt is older than group_wait, and the
        # other detectors of the same incident would then page a second time.
        "startsAt": _rfc3339(alert["timestamp"]),
    }
    if alert.get("status") == "resolved":
        out["endsAt"] = _rfc3339(alert["timestamp"])
    if generator_url:
        out["generatorURL"] = generator_url
    return out


def load_routes(path: str) -> list[Route]:
    """Routes from a TOML file of ``[[routes]]`` tables; a mistake names the field.

    >>> import tempfile, os
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    >>> _ = f.write('[[routes]]\\nurl = "http://am:9093/api/v2/alerts"\\nformat = "alertmanger"\\n'); f.close()
    >>> load_routes(f.name)
    Traceback (most recent call last):
    ...
    stream.settings.common.ConfigError: routes[0].format: 'alertmanger' is not one of json, alertmanager
    >>> os.unlink(f.name)
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"routes file {path}: {exc}") from None
    entries = data.get("routes")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"routes file {path}: no [[routes]] tables")
    return [route_from(entry, f"routes[{i}]") for i, entry in enumerate(entries)]


def route_from(entry: Any, where: str) -> Route:
    """One route from its TOML table (or the command line's equivalent)."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    known = {"name", "url", "format", "models", "kinds", "min_severity", "headers"}
    if unknown := sorted(set(entry) - known):
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting; known: {', '.join(sorted(known))}")
    url = entry.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.url: {url!r} must be an http:// or https:// URL")
    fmt = entry.get("format", "json")
    if fmt not in FORMATS:
        raise ConfigError(f"{where}.format: {fmt!r} is not one of {', '.join(FORMATS)}")
    severity = entry.get("min_severity", "info")
    if severity not in SEVERITIES:
        raise ConfigError(f"{where}.min_severity: {severity!r} is not one of {', '.join(SEVERITIES)}")
    kinds = entry.get("kinds", [])
    if not isinstance(kinds, list) or any(k not in KINDS for k in kinds):
        raise ConfigError(f"{where}.kinds: {kinds!r} must be a list of {', '.join(KINDS)}")
    models = entry.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"{where}.models: {models!r} must be a list of model names or glob patterns")
    headers = entry.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{where}.headers: must be a table of strings")
    return Route(
        name=str(entry.get("name", url)),
        url=url,
        format=fmt,
        models=tuple(models),
        kinds=tuple(kinds),
        min_severity=severity,
        headers=dict(headers),
    )


class FiringAlerts:
    """The alerts firing now, one per fingerprint, until a ``resolved`` message or ``forget_after_s``.

    An alert whose resolution never comes (its model retired, say) is dropped
    after ``forget_after_s`` seconds, so that Alertmanager lets it go too.

    >>> firing = FiringAlerts(forget_after_s=100)
    >>> for fp, status, t in (("f1", "firing", 10.0), ("f2", "firing", 20.0), ("f1", "resolved", 30.0)):
    ...     firing.update({"fingerprint": fp, "status": status, "timestamp": t})
    >>> [a["fingerprint"] for a in firing.now(now=50.0)], firing.now(now=121.0)
    (['f2'], [])
    """

    def __init__(self, forget_after_s: float = 86400.0) -> None:
        self.forget_after_s = forget_after_s
        self.by_fingerprint: dict[str, dict[str, Any]] = {}

    def update(self, alert: dict[str, Any]) -> None:
        """Take in one alert message, in the order of its partition."""
        if alert["status"] == "firing":
            self.by_fingerprint[alert["fingerprint"]] = alert
        else:
            self.by_fingerprint.pop(alert["fingerprint"], None)

    def now(self, now: float) -> list[dict[str, Any]]:
        """The alerts still firing, forgetting those older than ``forget_after_s``."""
        stale = [fp for fp, a in self.by_fingerprint.items() if now - a["timestamp"] > self.forget_after_s]
        for fp in stale:
            del self.by_fingerprint[fp]
        return list(self.by_fingerprint.values())


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to try one delivery.

    >>> [RetryPolicy(base_delay_s=0.5, max_delay_s=3).delay(n) for n in range(1, 5)]
    [0.5, 1.0, 2.0, 3]
    """

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    timeout_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))


@dataclass
class Delivery:
    """The outcome of delivering one alert on one route."""

    ok: bool
    attempts: int
    last: str


@dataclass
class RouterStats:
    """What the router did so far."""

    alerts: int = 0
    delivered: int = 0
    retries: int = 0
    undeliverable: int = 0
    filtered: int = 0
    bad_records: int = 0
    resent: int = 0


async def deliver(session: aiohttp.ClientSession, route: Route, alert: dict[str, Any], policy: RetryPolicy) -> Delivery:
    """POST ``alert`` on ``route``, retrying connection errors, 429 and 5xx with backoff."""
    return await deliver_body(session, route, route.body(alert), policy)


async def deliver_body(session: aiohttp.ClientSession, route: Route, body: bytes, policy: RetryPolicy) -> Delivery:
    """POST ``body`` on ``route`` with the policy's retries."""
    headers = {"Content-Type": "application/json", **route.headers}
    last = ""
    for attempt in range(1, policy.attempts + 1):
        try:
            timeout = aiohttp.ClientTimeout(total=policy.timeout_s)
            async with session.post(route.url, data=body, headers=headers, timeout=timeout) as response:
                if response.status < 300:
                    return Delivery(True, attempt, f"HTTP {response.status}")
                text = (await response.text())[:200]
                last = f"HTTP {response.status} {text}".strip()
                if response.status != 429 and response.status < 500:
                    return Delivery(False, attempt, last)  # the receiver refuses it; trying again won't help
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if attempt < policy.attempts:
            await asyncio.sleep(policy.delay(attempt))
    return Delivery(False, policy.attempts, last)


class Router:
    """Consumes the alerts topic and delivers each alert on every route that matches it."""

    def __init__(
        self,
        settings: Settings,
        routes: list[Route],
        *,
        group_id: str | None = None,
        from_beginning: bool = False,
        policy: RetryPolicy | None = None,
        on_delivery: Callable[[Route, dict[str, Any], Delivery], None] | None = None,
        resend_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.routes = routes
        self.group_id = group_id or f"{settings.app_id}-router"
        self.from_beginning = from_beginning
        self.policy = policy or RetryPolicy()
        self.on_delivery = on_delivery
        self.stats = RouterStats()
        self.resend_s = resend_s
        self.firing = FiringAlerts()
        self.alertmanagers = [r for r in routes if r.format == "alertmanager"]

    async def run(self, stop: asyncio.Event) -> RouterStats:
        """Route alerts until ``stop`` is set; returns the stats."""
        servers = self.settings.bootstrap_servers
        topic = self.settings.topics.alerts
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if self.from_beginning else "latest",
            **self.settings.kafka_options(),
        )
        producer = AIOKafkaProducer(bootstrap_servers=servers, **self.settings.kafka_options())
        if self.alertmanagers:
            await self._learn_firing()
        await consumer.start()
        await producer.start()
        try:
            async with aiohttp.ClientSession() as session:
                resent_at = time.monotonic()
                while not stop.is_set():
                    batches = await consumer.getmany(timeout_ms=500)
                    for records in batches.values():
                        for record in records:
                            await self._route(session, producer, record)
                    if batches:
                        await consumer.commit()
                    if self.alertmanagers and time.monotonic() - resent_at >= self.resend_s:
                        resent_at = time.monotonic()
                        await self._resend(session)
        finally:
            await consumer.stop()
            await producer.stop()
        return self.stats

    async def _learn_firing(self) -> None:
        """The alerts firing when the router starts, from the topic's history."""
        async with TopicReader.alerts(self.settings, from_beginning=True) as reader:
            async for record in reader.until_end():
                try:
                    alert = orjson.loads(record.value)
                    validate("alert", alert)
                except (orjson.JSONDecodeError, SchemaError):
                    continue
                self.firing.update(alert)
        log.info("%d alerts firing in the history of %s", len(self.firing.by_fingerprint), self.settings.topics.alerts)

    async def _resend(self, session: aiohttp.ClientSession) -> None:
        """Tell every Alertmanager route again what is still firing; a failure waits for the next round."""
        firing = self.firing.now(time.time())
        for route in self.alertmanagers:
            alerts = [alertmanager_alert(a) for a in firing if route.matches(a)]
            if not alerts:
                continue
            policy = RetryPolicy(attempts=1, timeout_s=self.policy.timeout_s)
            outcome = await deliver_body(session, route, orjson.dumps(alerts), policy)
            if outcome.ok:
                self.stats.resent += len(alerts)
            else:
                log.warning("could not send %d firing alerts again to %s: %s", len(alerts), route.name, outcome.last)

    async def _route(self, session: aiohttp.ClientSession, producer: AIOKafkaProducer, record: Any) -> None:
        self.stats.alerts += 1
        try:
            alert = orjson.loads(record.value)
        except orjson.JSONDecodeError as exc:
            self.stats.bad_records += 1
            await self._dead_letter(producer, record, Reject(f"not JSON: {exc}", "invalid_json", record.value))
            return
        try:
            validate("alert", alert)  # the contract: every field a route's format reads is there
        except SchemaError as exc:
            self.stats.bad_records += 1
            await self._dead_letter(producer, record, Reject(str(exc), "invalid_schema", record.value))
            return
        self.firing.update(alert)
        matching = [r for r in self.routes if r.matches(alert)]
        if not matching:
            self.stats.filtered += 1
        for route in matching:
            outcome = await deliver(session, route, alert, self.policy)
            self.stats.retries += max(0, outcome.attempts - 1)
            if self.on_delivery is not None:
                self.on_delivery(route, alert, outcome)
            if outcome.ok:
                self.stats.delivered += 1
                continue
            self.stats.undeliverable += 1
            reason = f"route {route.name} ({route.url}): {outcome.last} after {outcome.attempts} attempts"
            log.warning("undeliverable alert %s: %s", alert.get("alert_id"), reason)
            await self._dead_letter(producer, record, Reject(reason, "undeliverable", record.value))

    async def _dead_letter(self, producer: AIOKafkaProducer, record: Any, reject: Reject) -> None:
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        letter = dead_letter(reject, key=record.key, **where)
        await producer.send_and_wait(self.settings.topics.deadletter, key=record.key, value=orjson.dumps(letter))

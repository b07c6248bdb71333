"""Web pages of the worker: health, metrics, and the per-model statistics.

With ``web_token`` set, every page but ``/health`` (for orchestrators' probes,
and it holds no model data) requires ``Authorization: Bearer <token>``.

Tables are partitioned across workers. ``/models/{model}/stats`` and
``/models/{model}/segments`` are answered by the worker that owns the
model's partition; ``/models`` asks every
worker in the group (their addresses come from Faust's assignment metadata)
and merges the answers.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

import faust
from aiohttp import ClientError, ClientTimeout

from stream.privacy.noise import private_segments
from stream.web.status import DriftCache, model_status

if TYPE_CHECKING:
    from stream.worker.app import MonitorApp

VIEWS = ("tumbling", "hopping")
STATIC = {"page.js": "text/javascript", "page.css": "text/css"}
RECENT_ALERTS = 50


def register(mon: MonitorApp) -> None:
    """Attach the worker's pages to ``mon``'s Faust app."""
    app = mon.app

    page = resources.files("stream.web") / "page"
    drift_cache = DriftCache()

    # The page and its files hold no data and are open; the data they fetch needs the token.
    @app.page("/")
    async def index(web, request):
        return web.html((page / "index.html").read_text())

    @app.page("/static/{name}")
    async def static(web, request, name: str):
        if name not in STATIC:
            return web.json({"error": f"no static file {name!r}"}, status=404)
        return web.text((page / name).read_text(), content_type=STATIC[name])

    @app.page("/api/status")
    async def status(web, request):
        if (denied := refused(web, request)) is not None:
            return denied
        models = {m: model_status(mon.monitor_for(m), drift_cache, mon.noise) for m in mon.local_models()}
        alerts = {a["alert_id"]: a for a in mon.recent_alerts}
        for entry in models.values():
            for version in entry["versions"]:
                for alert in version["firing"]:
                    alerts.setdefault(alert["alert_id"], alert)
        if request.query.get("scope") != "local":
            answers = await asyncio.gather(*(_fetch_local(mon, url, "/api/status") for url in _other_workers(mon)))
            for answer in answers:
                for entry in answer.get("models", []):
                    models.setdefault(entry["model"], entry)
                for alert in answer.get("alerts", []):
                    alerts.setdefault(alert["alert_id"], alert)
        recent = sorted(alerts.values(), key=lambda a: (a["event_time"], a["timestamp"]), reverse=True)
        return web.json(
            {
                "generated_at": time.time(),
                "models": [models[m] for m in sorted(models)],
                "alerts": recent[:RECENT_ALERTS],
            }
        )

    @app.page("/health")
    async def health(web, request):
        assigned = sorted(
            f"{tp.topic}:{tp.partition}"
            for tp in (app.consumer.assignment() if app.consumer else ())
            if tp.topic == mon.settings.topics.events
        )
        return web.json(
            {
                "ready": mon.ready,
                "app_id": mon.settings.app_id,
                "assigned": assigned,
                "models": len(mon.local_models()),
                **mon.counters.as_dict(),
            }
        )

    def refused(web, request):
        """A 401 answer when a token is required and the request lacks it, else None."""
        if authorized(mon.settings.web_token, request.headers.get("Authorization")):
            return None
        return web.json({"error": "missing or wrong bearer token"}, status=401, headers={"WWW-Authenticate": "Bearer"})

    @app.page("/metrics")
    async def metrics(web, request):
        if (denied := refused(web, request)) is not None:
            return denied
        # aiohttp refuses a charset in content_type=, so the header goes in whole.
        return web.bytes(mon.metrics.render(), headers={"Content-Type": mon.metrics.content_type})

    @app.page("/models")
    async def models(web, request):
        if (denied := refused(web, request)) is not None:
            return denied
        found: dict[str, Any] = {m: mon.monitor_for(m).overview() for m in mon.local_models()}
        if request.query.get("scope") != "local":
            for answer in await asyncio.gather(*(_fetch_local(mon, url, "/models") for url in _other_workers(mon))):
                for entry in answer.get("models", []):
                    found.setdefault(entry["model"], entry)
        return web.json({"models": [found[m] for m in sorted(found)]})

    async def model_page(view: Any, request: Any, model: str, page: str) -> Any:
        """A page about one model, answered by the worker that owns its partition."""
        if (denied := refused(view, request)) is not None:
            return denied
        owner = _owner_of(mon, model)
        if owner is not None and request.query.get("scope") != "local":
            answer, status = await _fetch_json(mon, f"{owner}/models/{model}/{page}", dict(request.query))
            return view.json(answer, status=status)
        window = request.query.get("window", "tumbling")
        if window not in VIEWS:
            return view.json({"error": f"window must be one of {', '.join(VIEWS)}, not {window!r}"}, status=400)
        if not mon.has_model(model):
            return view.json({"error": f"no events seen for model {model!r}"}, status=404)
        monitor = mon.monitor_for(model)
        if page == "stats":
            return view.json(monitor.summary(window))
        found = monitor.segments()
        versions = {v: private_segments(s, f"{model}/{v}", mon.noise) for v, s in found["versions"].items()}
        noise = None if mon.noise is None else mon.noise.describe()
        return view.json({**found, "versions": versions, "noise": noise})

    @app.page("/models/{model}/stats")
    class ModelStats(faust.web.View):
        async def get(self, request, model: str):
            return await model_page(self, request, model, "stats")

    @app.page("/models/{model}/segments")
    class ModelSegments(faust.web.View):
        async def get(self, request, model: str):
            return await model_page(self, request, model, "segments")


def authorized(token: str, header: str | None) -> bool:
    """Whether an Authorization header satisfies the configured token (none: everyone).

    >>> authorized("", None), authorized("s3cret", "Bearer s3cret"), authorized("s3cret", "Bearer nope")
    (True, True, False)
    """
    if not token:
        return True
    return header is not None and hmac.compare_digest(header.encode(), f"Bearer {token}".encode())


def bearer(token: str) -> dict[str, str]:
    """Headers that carry ``token`` (none when no token is set)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _owner_of(mon: MonitorApp, model: str) -> str | None:
    """The URL of the other worker that owns ``model``'s partition; None when it is this one or unknown.

    Faust's table_route asks its producer for the changelog's partitions, which a producer
    knows only once it has written there; the partition is computed instead.
    """
    changelog = mon.model_state.changelog_topic.get_topic_name()
    partition = mon.partition_of(model)
    return next((url for url, topics in _other_hosts(mon).items() if partition in topics.get(changelog, ())), None)


async def _fetch_json(mon: MonitorApp, url: str, query: dict[str, str]) -> tuple[Any, int]:
    """Another worker's answer and status, asked to answer for itself; 503 when it cannot be asked."""
    timeout = ClientTimeout(total=5)
    try:
        async with mon.app.http_client.get(
            url, params={**query, "scope": "local"}, timeout=timeout, headers=bearer(mon.settings.web_token)
        ) as response:
            return await response.json(), response.status
    except (ClientError, TimeoutError, ValueError) as exc:
        return {"error": f"the worker that owns this model ({url}) did not answer: {type(exc).__name__}"}, 503


def _other_hosts(mon: MonitorApp) -> dict[str, Any]:
    """The other workers of the group, by URL, with the changelog partitions each holds."""
    me = str(mon.app.conf.canonical_url).rstrip("/")
    try:
        hosts = mon.app.router.tables_metadata()
    except Exception:  # no assignment yet
        return {}
    return {str(url).rstrip("/"): topics for url, topics in hosts.items() if str(url).rstrip("/") != me}


def _other_workers(mon: MonitorApp) -> list[str]:
    return list(_other_hosts(mon))


async def _fetch_local(mon: MonitorApp, url: str, path: str) -> dict[str, Any]:
    """Another worker's answer for its own models only; empty when it cannot be asked."""
    answer, status = await _fetch_json(mon, f"{url}{path}", {})
    return answer if status < 300 and isinstance(answer, dict) else {}

"""Web pages of the worker: health, metrics, and the per-model statistics.

With ``web_token`` set, every page but ``/health`` (for orchestrators' probes,
and it holds no model data) requires ``Authorization: Bearer <token>``.

Tables are partitioned across workers. ``/models/{model}/stats`` is routed by
Faust to the worker that owns the model's partition; ``/models`` asks every
worker in the group (their addresses come from Faust's assignment metadata)
and merges the answers.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Any

import faust
from aiohttp import ClientError, ClientTimeout

if TYPE_CHECKING:
    from stream.app import MonitorApp

VIEWS = ("tumbling", "hopping")


def register(mon: MonitorApp) -> None:
    """Attach the worker's pages to ``mon``'s Faust app."""
    app = mon.app

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
            for answer in await asyncio.gather(*(_fetch_local_models(mon, url) for url in _other_workers(mon))):
                for entry in answer:
                    found.setdefault(entry["model"], entry)
        return web.json({"models": [found[m] for m in sorted(found)]})

    @app.page("/models/{model}/stats")
    class ModelStats(faust.web.View):
        @app.table_route(table=mon.model_state, match_info="model")
        async def get(self, request, model: str):
            if (denied := refused(self, request)) is not None:
                return denied
            view = request.query.get("window", "tumbling")
            if view not in VIEWS:
                return self.json({"error": f"window must be one of {', '.join(VIEWS)}, not {view!r}"}, status=400)
            if not mon.has_model(model):
                return self.json({"error": f"no events seen for model {model!r}"}, status=404)
            return self.json(mon.monitor_for(model).summary(view))


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


def _other_workers(mon: MonitorApp) -> list[str]:
    me = str(mon.app.conf.canonical_url).rstrip("/")
    try:
        hosts = mon.app.router.tables_metadata()
    except Exception:  # no assignment yet
        return []
    return [str(url).rstrip("/") for url in hosts if str(url).rstrip("/") != me]


async def _fetch_local_models(mon: MonitorApp, url: str) -> list[dict[str, Any]]:
    try:
        async with mon.app.http_client.get(f"{url}/models?scope=local", timeout=ClientTimeout(total=3)) as response:
            return (await response.json())["models"]
    except (ClientError, TimeoutError, ValueError, KeyError):
        return []

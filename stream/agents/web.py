"""Web pages of the worker: health for orchestrators, metrics for Prometheus."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.app import MonitorApp


def register(mon: MonitorApp) -> None:
    """Attach the worker's pages to ``mon``'s Faust app."""

    @mon.app.page("/metrics")
    async def metrics(web, request):
        # aiohttp refuses a charset in content_type=, so the header goes in whole.
        return web.bytes(mon.metrics.render(), headers={"Content-Type": mon.metrics.content_type})

    @mon.app.page("/health")
    async def health(web, request):
        app = mon.app
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
                "models": len(mon.model_state),
                **mon.counters.as_dict(),
            }
        )

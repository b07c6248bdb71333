"""Silence is an incident: a model that stops sending raises a traffic alert, resolved when records return."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import orjson

from stream.contracts.schemas import validate
from stream.kafka.follow import read_all
from stream.sdk.client import make_event

from .conftest import isolated_settings
from .helpers import publish, wait_for_events


async def _traffic_alerts(iso, model):
    records = await read_all(iso.settings.bootstrap_servers, iso.settings.topics.alerts, timeout_s=2)
    return [a for a in (orjson.loads(r.value) for r in records) if a["model"] == model and a["kind"] == "traffic"]


async def _wait_for(iso, model, statuses, timeout_s=40.0):
    deadline = time.monotonic() + timeout_s
    found = []
    while time.monotonic() < deadline:
        found = await _traffic_alerts(iso, model)
        if [a["status"] for a in found] == statuses:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"traffic alerts of {model}: {[a['status'] for a in found]}, expected {statuses}")


def _overview(worker, model):
    with urllib.request.urlopen(f"{worker.url}/models", timeout=5) as response:
        return next(m for m in json.loads(response.read())["models"] if m["model"] == model)


async def test_a_model_that_goes_quiet_pages_once_and_resolves_when_records_return(broker):
    iso = isolated_settings(broker)
    worker = iso.worker(env_extra={"STREAM_MONITOR_SILENCE_AFTER_S": "4"})
    worker.start()
    try:
        await publish(iso, [make_event("quiet", "1", 10.0, 0, timestamp=time.time()) for _ in range(30)])
        await asyncio.get_running_loop().run_in_executor(None, wait_for_events, worker, 30)
        [firing] = await _wait_for(iso, "quiet", ["firing"])
        validate("alert", firing)
        assert firing["detector"] == "silence" and firing["model_version"] == "*"
        assert firing["value"] >= firing["threshold"] == 4
        overview = _overview(worker, "quiet")
        assert overview["traffic"]["silent"] is True and overview["traffic"]["quiet_s"] >= 4
        await publish(iso, [make_event("quiet", "1", 10.0, 0, timestamp=time.time())])
        firing_again, resolved = await _wait_for(iso, "quiet", ["firing", "resolved"])
        assert firing_again == firing and resolved["evidence"]["firing_alert_id"] == firing["alert_id"]
        assert _overview(worker, "quiet")["traffic"]["silent"] is False
    finally:
        worker.stop()

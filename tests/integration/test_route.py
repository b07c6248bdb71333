"""`stream-monitor route` against a local webhook receiver: Alertmanager payloads, filters,
a retry after a 500, and a dead letter for an alert that cannot be delivered."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from stream.contracts.schemas import validate
from stream.kafka.embedded_broker import free_port
from stream.kafka.follow import read_all
from stream.kafka.topics import ensure_topics, required_topics

from .conftest import isolated_settings

SCHEMA = Path(__file__).parents[2] / "schemas" / "alert.schema.json"
EXAMPLE = json.loads(SCHEMA.read_text())["examples"][0]


class Receiver:
    """Webhook endpoints that keep what they got: ``am`` fails the anomaly once, ``dead`` always fails."""

    def __init__(self) -> None:
        self.got: dict[str, list] = {"am": [], "hook": [], "dead": []}
        self.fail_once = {("am", "a-anomaly")}

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.json()
        self.got[name].append(body)
        alert_id = body[0]["annotations"]["alert_id"] if isinstance(body, list) else body["alert_id"]
        if (name, alert_id) in self.fail_once:
            self.fail_once.discard((name, alert_id))
            return web.Response(status=500, text="receiver says so")
        return web.Response(status=503 if name == "dead" else 200, text="receiver says so")


async def start_receiver(receiver: Receiver) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/{name}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def wait_for(check, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


async def test_route_delivers_alertmanager_and_json_retries_a_500_and_dead_letters_the_rest(broker, tmp_path):
    iso = isolated_settings(broker)
    receiver = Receiver()
    runner, port = await start_receiver(receiver)
    base = f"http://127.0.0.1:{port}"
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f"""
[[routes]]
name = "alertmanager"
url = "{base}/am"
format = "alertmanager"

[[routes]]
name = "drift-hook"
url = "{base}/hook"
kinds = ["drift"]

[[routes]]
name = "broken-pager"
url = "{base}/dead"
min_severity = "critical"
"""
    )
    now = time.time()
    anomaly = {**EXAMPLE, "alert_id": "a-anomaly", "timestamp": now, "event_time": now - 5}
    drift = {
        **EXAMPLE,
        "alert_id": "a-drift",
        "fingerprint": "d" * 32,  # a valid fingerprint (hex)
        "kind": "drift",
        "severity": "warning",
        "status": "resolved",
        "signal": "features.amount",
        "detector": "adwin",
        "timestamp": now + 1,
        "event_time": now - 1,
    }
    await ensure_topics(iso.settings.bootstrap_servers, required_topics(iso.settings))
    producer = AIOKafkaProducer(bootstrap_servers=iso.settings.bootstrap_servers)
    await producer.start()
    for alert in (anomaly, drift):
        key = alert["fingerprint"].encode()
        await producer.send_and_wait(iso.settings.topics.alerts, key=key, value=orjson.dumps(alert))
    await producer.stop()

    env = {**os.environ, **iso.env}
    command = [sys.executable, "-m", "stream.tools.cli", "route", "--broker", iso.settings.broker]
    command += ["--app-id", iso.settings.app_id]
    router = subprocess.Popen(
        [*command, "--routes", str(routes), "--from-beginning", "--attempts", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        letters = await read_all(iso.settings.bootstrap_servers, iso.settings.topics.deadletter, expect=1, timeout_s=40)
        await wait_for(lambda: len(receiver.got["am"]) >= 3 and receiver.got["hook"])
    finally:
        router.send_signal(signal.SIGTERM)
        out, err = router.communicate(timeout=30)
        await runner.cleanup()
    assert router.returncode == 0, err

    # Alertmanager: the anomaly twice (a 500, then the retry) and the resolved drift, in either order
    # (the two alerts sit on different partitions).
    am = receiver.got["am"]
    assert [len(body) for body in am] == [1, 1, 1]
    by_id: dict[str, list] = {}
    for body in am:
        by_id.setdefault(body[0]["annotations"]["alert_id"], []).append(body[0])
    assert len(by_id["a-anomaly"]) == 2 and len(by_id["a-drift"]) == 1
    assert by_id["a-anomaly"][0] == by_id["a-anomaly"][1], "the retry must send the same alert"
    first, resolved = by_id["a-anomaly"][0], by_id["a-drift"][0]
    assert first["labels"]["alertname"] == "StreamMonitorAnomaly"
    assert first["labels"]["model"] == "fraud-scorer" and first["labels"]["severity"] == "critical"
    assert first["annotations"]["summary"] == anomaly["message"]
    assert abs(datetime.fromisoformat(first["startsAt"]).timestamp() - anomaly["timestamp"]) < 1e-3
    assert abs(datetime.fromisoformat(first["annotations"]["event_time"]).timestamp() - anomaly["event_time"]) < 1e-3
    assert "endsAt" not in first
    assert resolved["labels"]["alertname"] == "StreamMonitorDrift" and "endsAt" in resolved
    # The JSON route only took the drift, as published.
    assert receiver.got["hook"] == [json.loads(orjson.dumps(drift))]
    # The broken pager was tried three times for the critical alert only, then dead-lettered.
    assert [a["alert_id"] for a in receiver.got["dead"]] == ["a-anomaly"] * 3
    [letter] = [orjson.loads(r.value) for r in letters]
    validate("dead-letter", letter)
    assert letter["error_type"] == "undeliverable"
    assert "broken-pager" in letter["reason"] and "HTTP 503" in letter["reason"] and "3 attempts" in letter["reason"]
    assert orjson.loads(base64.b64decode(letter["value_b64"]))["alert_id"] == "a-anomaly"
    assert "UNDELIVERABLE fraud-scorer anomaly firing -> broken-pager" in out
    assert "2 alerts: 3 deliveries, 3 retries, 1 undeliverable" in err


def test_route_refuses_a_bad_route_naming_it():
    result = subprocess.run(
        [sys.executable, "-m", "stream.tools.cli", "route", "--webhook", "ftp://nowhere"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--webhook[0].url: 'ftp://nowhere' must be an http:// or https:// URL" in result.stderr

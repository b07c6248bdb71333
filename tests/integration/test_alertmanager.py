"""`stream-monitor route --alertmanager` into a real Alertmanager with the shipped config,
and a webhook receiver behind it: one notification per incident, with the alert's labels;
info alerts page nobody; a silent model inhibits its other alerts; `resolved` clears the
incident; and alerts still firing are sent again, so that Alertmanager does not resolve them.

Alertmanager comes from Debian's ``prometheus-alertmanager`` package (installed when
missing). Only the receiver's URL and the grouping delays of the shipped config are changed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import yaml
from aiohttp import web
from aiokafka import AIOKafkaProducer

from stream.contracts.schemas import validate
from stream.kafka.embedded_broker import free_port
from stream.kafka.topics import ensure_topics, required_topics
from tests.debian import debian_program

from .conftest import isolated_settings

SHIPPED = Path(__file__).parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"
EXAMPLE = json.loads((Path(__file__).parents[2] / "schemas" / "alert.schema.json").read_text())["examples"][0]


def inc(name: str) -> str:
    """An incident id as the worker makes them (hex), from a name the test can read."""
    return uuid.uuid5(uuid.NAMESPACE_DNS, name).hex


def alert(model: str, incident: str, detector: str, *, kind: str = "anomaly", severity: str = "warning", **extra):
    now = time.time()
    out = {
        **EXAMPLE,
        "alert_id": uuid.uuid4().hex,
        "fingerprint": uuid.uuid5(uuid.NAMESPACE_DNS, f"{model}/{detector}").hex,
        "incident": inc(incident),
        "model": model,
        "model_version": "3",
        "kind": kind,
        "severity": severity,
        "detector": detector,
        "message": f"{model}: {detector} says latency_ms moved up",
        "timestamp": now,
        "event_time": now - 5,
        **extra,
    }
    validate("alert", out)
    return out


def config_for(receiver_url: str, tmp: Path) -> Path:
    config = yaml.safe_load(SHIPPED.read_text())
    # Seconds instead of minutes, so that the test sees the first page and the resolution; and an
    # alert not heard of for 5 s is over, so that only the router's resends keep the others firing.
    config["route"].update(group_wait="4s", group_interval="2s")
    config.setdefault("global", {})["resolve_timeout"] = "5s"
    [on_call] = [r for r in config["receivers"] if r["name"] == "on-call"]
    on_call["webhook_configs"][0]["url"] = receiver_url
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Webhook:
    """The receiver behind Alertmanager: keeps every notification."""

    def __init__(self) -> None:
        self.notifications: list[dict] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.notifications.append(await request.json())
        return web.Response(text="ok")

    def of(self, incident: str) -> list[dict]:
        return [n for n in self.notifications if n["groupLabels"].get("incident") == inc(incident)]


def alertmanager_alerts(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as response:
        return json.loads(response.read())


async def eventually(check, timeout_s: float = 40.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def test_the_shipped_alertmanager_config_passes_amtool():
    amtool = debian_program("amtool", "prometheus-alertmanager")
    result = subprocess.run([amtool, "check-config", str(SHIPPED)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Found:" in result.stdout and " - 2 receivers" in result.stdout


async def test_route_into_alertmanager_pages_once_per_incident_and_clears_on_resolved(broker, tmp_path):
    binary = debian_program("prometheus-alertmanager", "prometheus-alertmanager")
    iso = isolated_settings(broker)
    webhook = Webhook()
    app = web.Application()
    app.router.add_post("/hook", webhook.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port, am_port = free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    am_url = f"http://127.0.0.1:{am_port}"
    alertmanager = subprocess.Popen(
        [
            binary,
            f"--config.file={config_for(f'http://127.0.0.1:{hook_port}/hook', tmp_path)}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",  # one instance, no gossip
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "alertmanager.log").open("wb"),
    )
    await ensure_topics(iso.settings.bootstrap_servers, required_topics(iso.settings))
    producer = AIOKafkaProducer(bootstrap_servers=iso.settings.bootstrap_servers)
    await producer.start()

    async def publish(*alerts: dict) -> None:
        for a in alerts:
            key = a["fingerprint"].encode()
            await producer.send_and_wait(iso.settings.topics.alerts, key=key, value=orjson.dumps(a))

    # Before the router starts: an incident already firing, which only the history knows.
    old = alert("recommender", "inc-old", "cusum")
    await publish(old)
    command = [sys.executable, "-m", "stream.tools.cli", "route", "--broker", iso.settings.broker]
    command += ["--app-id", iso.settings.app_id, "--alertmanager", f"{am_url}/api/v2/alerts", "--resend", "2"]
    router = subprocess.Popen(
        command, env={**os.environ, **iso.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        await eventually(lambda: alertmanager.poll() is None and _ready(am_url), what="Alertmanager ready")
        await eventually(lambda: webhook.of("inc-old"), what="the incident firing before the router started")
        await asyncio.sleep(3)  # the router's consumer group joins at the end of the topic
        # Two detectors agree about one incident; a second model has its own; info pages nobody;
        # a silent model's traffic alert holds back its other alerts.
        zscore = alert("fraud-scorer", "inc-1", "zscore", severity="critical")
        cusum = alert("fraud-scorer", "inc-1", "cusum")
        drift = alert("churn", "inc-2", "reference_drift", kind="drift", signal="features.tenure")
        info = alert("churn", "inc-3", "quality", kind="data_quality", severity="info")
        silent = alert("ranker", "inc-4", "silence", kind="traffic", signal="traffic")
        masked = alert("ranker", "inc-5", "zscore")
        await publish(zscore, cusum, drift, info, silent, masked)
        await eventually(lambda: webhook.of("inc-1") and webhook.of("inc-2") and webhook.of("inc-4"), what="pages")

        [page] = webhook.of("inc-1")
        assert page["status"] == "firing" and page["receiver"] == "on-call"
        assert page["groupLabels"] == {"model": "fraud-scorer", "model_version": "3", "incident": inc("inc-1")}
        by_detector = {a["labels"]["detector"]: a for a in page["alerts"]}
        assert set(by_detector) == {"zscore", "cusum"}, "one incident, one notification"
        labels = by_detector["zscore"]["labels"]
        assert labels["alertname"] == "StreamMonitorAnomaly" and labels["severity"] == "critical"
        assert (labels["model"], labels["signal"], labels["kind"]) == ("fraud-scorer", "latency_ms", "anomaly")
        assert by_detector["zscore"]["annotations"]["summary"] == zscore["message"]
        [drift_page] = webhook.of("inc-2")
        assert drift_page["alerts"][0]["labels"]["signal"] == "features.tenure"

        # Resolved: one more notification for the incident, saying so.
        now = time.time()
        ended = [{**a, "status": "resolved", "alert_id": uuid.uuid4().hex, "timestamp": now} for a in (zscore, cusum)]
        await publish(*ended)
        await eventually(lambda: len(webhook.of("inc-1")) == 2, what="the resolution")
        resolved = webhook.of("inc-1")[1]
        assert resolved["status"] == "resolved" and {a["status"] for a in resolved["alerts"]} == {"resolved"}

        # Still firing at twice Alertmanager's resolve_timeout: the resends keep them active.
        await asyncio.sleep(10)
        names = {inc(n): n for n in ("inc-old", "inc-1", "inc-2", "inc-3", "inc-4", "inc-5")}
        active = {(names[a["labels"]["incident"]], a["status"]["state"]) for a in alertmanager_alerts(am_url)}
        assert {("inc-old", "active"), ("inc-2", "active"), ("inc-4", "active")} <= active
        assert ("inc-5", "suppressed") in active, "the silent model's anomaly is inhibited"
        assert ("inc-3", "active") in active  # routed to the receiver that pages nobody
        assert not webhook.of("inc-3") and not webhook.of("inc-5")
        assert not any(incident == "inc-1" for incident, _ in active)
        # One page per incident: resending refreshed them without paging again.
        for incident in ("inc-old", "inc-2", "inc-4"):
            assert [n["status"] for n in webhook.of(incident)] == ["firing"], incident
    finally:
        router.send_signal(signal.SIGTERM)
        _, err = router.communicate(timeout=30)
        alertmanager.terminate()
        alertmanager.wait(timeout=30)
        await producer.stop()
        await runner.cleanup()
    assert router.returncode == 0, err
    assert "firing alerts sent again to Alertmanager" in err


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False

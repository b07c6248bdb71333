"""`stream-monitor alerts`: readable lines by default, JSON with --json, --follow waits."""

import asyncio
import os
import subprocess
import sys
import time

import orjson
from aiokafka import AIOKafkaProducer

from stream.contracts.schemas import load_schema
from stream.kafka.topics import ensure_topics, required_topics

from .conftest import isolated_settings


async def publish_alert(iso, alert):
    producer = AIOKafkaProducer(bootstrap_servers=iso.settings.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            iso.settings.topics.alerts, key=alert["fingerprint"].encode(), value=orjson.dumps(alert)
        )
    finally:
        await producer.stop()


def example_alert(message):
    return {**load_schema("alert")["examples"][0], "message": message}


def alerts_cli(iso, *args):
    return [sys.executable, "-m", "stream.tools.cli", "alerts", "--broker", iso.settings.broker, *args]


def test_follow_prints_new_alerts_as_readable_lines(broker):
    iso = isolated_settings(broker)
    asyncio.run(ensure_topics(broker.bootstrap_servers, required_topics(iso.settings)))
    env = {**os.environ, **iso.env}
    proc = subprocess.Popen(alerts_cli(iso, "--follow"), stdout=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(2.0)  # let it seek to the end before the alert is published
        asyncio.run(publish_alert(iso, example_alert("fraud-scorer 2.3.0: something slow")))
        line = proc.stdout.readline()
        assert "FIRING critical anomaly fraud-scorer 2.3.0 latency_ms/zscore" in line
        # The line names the model and version once; the message's own prefix (for pagers) is dropped.
        assert line.rstrip().endswith("latency_ms/zscore: something slow")
        assert line.count("fraud-scorer 2.3.0") == 1
    finally:
        proc.terminate()
        proc.wait(10)


def test_without_follow_prints_kept_alerts_as_json_and_exits(broker):
    iso = isolated_settings(broker)
    asyncio.run(ensure_topics(broker.bootstrap_servers, required_topics(iso.settings)))
    for i in range(3):
        asyncio.run(publish_alert(iso, example_alert(f"alert {i}")))
    result = subprocess.run(
        alerts_cli(iso, "--json"), capture_output=True, text=True, env={**os.environ, **iso.env}, timeout=60
    )
    assert result.returncode == 0, result.stderr
    messages = sorted(orjson.loads(line)["message"] for line in result.stdout.splitlines())
    assert messages == ["alert 0", "alert 1", "alert 2"]


def test_report_draws_the_alert_timeline_as_a_png(broker, tmp_path):
    iso = isolated_settings(broker)
    asyncio.run(ensure_topics(broker.bootstrap_servers, required_topics(iso.settings)))
    t0 = time.time() - 3600
    base = example_alert("slow")
    series = [
        {**base, "status": "firing", "event_time": t0},
        {**base, "status": "firing", "event_time": t0 + 600, "evidence": {"repeats": 3}},
        {**base, "status": "resolved", "event_time": t0 + 900},
        {**base, "fingerprint": "other", "model": "recommender", "status": "firing", "event_time": t0 + 1200},
        {**base, "fingerprint": "old", "status": "firing", "event_time": t0 - 86_400},
    ]
    for alert in series:
        asyncio.run(publish_alert(iso, alert))
    output = tmp_path / "timeline.png"
    command = [sys.executable, "-m", "stream.tools.cli", "report", "--broker", iso.settings.broker, "--hours", "2"]
    env = {**os.environ, **iso.env}
    result = subprocess.run([*command, "-o", str(output)], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"wrote {output}: 2 alert periods from 4 alerts" in result.stdout
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and output.stat().st_size > 10_000
    only = subprocess.run([*command, "-o", str(output), "--model", "recom*"], capture_output=True, text=True, env=env)
    assert "1 alert periods from 1 alerts" in only.stdout

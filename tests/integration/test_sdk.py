"""The SDK against a real broker: envelopes keyed by model, nothing lost."""

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import orjson

from stream.contracts.schemas import validate
from stream.kafka.follow import read_all
from stream.kafka.topics import ensure_topics, required_topics
from stream.sdk.client import SyncMonitorClient

from .conftest import isolated_settings


def test_sync_client_sends_envelopes_keyed_by_model(broker):
    iso = isolated_settings(broker)
    asyncio.run(ensure_topics(broker.bootstrap_servers, required_topics(iso.settings)[:1]))
    client = SyncMonitorClient(broker.url, topic=iso.settings.topics.events, batch_size=200)
    t0 = time.perf_counter()
    for i in range(1500):
        model = "a" if i % 3 else "b"
        assert client.record(model, "1", float(i % 50), i % 2, features={"x": i})
    record_time = time.perf_counter() - t0
    assert client.flush(10.0)
    client.close()
    assert client.stats.sent == 1500 and client.stats.dropped == 0
    assert record_time < 1.5, f"record() took {record_time:.2f}s for 1500 events"

    records = asyncio.run(read_all(broker.bootstrap_servers, iso.settings.topics.events, timeout_s=5))
    seen = {"a": 0, "b": 0}
    ids = set()
    for record in records:
        envelope = orjson.loads(record.value)
        validate("inference-envelope", envelope)
        assert len(envelope["events"]) <= 200
        for event in envelope["events"]:
            validate("inference-event", event)
            assert event["model"] == record.key.decode()
            seen[event["model"]] += 1
            ids.add(event["event_id"])
    assert seen == {"a": 1000, "b": 500}
    assert len(ids) == 1500
    assert len(records) < 1500 / 10, "events must travel in envelopes, not one per record"


def test_the_sdk_installs_alone_and_publishes_without_the_monitor_s_dependencies(broker, tmp_path):
    # A service installs the package without the [worker] extra: no Faust, river, numpy or matplotlib.
    root = Path(__file__).resolve().parents[2]
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(root)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    [wheel] = wheels.glob("*.whl")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True, timeout=600
    )
    assert installed.returncode == 0, installed.stderr
    iso = isolated_settings(broker)
    asyncio.run(ensure_topics(broker.bootstrap_servers, required_topics(iso.settings)[:1]))
    script = f"""
import importlib.util, sys
from stream.sdk import SyncMonitorClient
client = SyncMonitorClient({broker.url!r}, topic={iso.settings.topics.events!r}, batch_size=50)
for i in range(120):
    client.record("light", "1", 5.0 + i % 3, i % 2, features={{"x": i}})
assert client.flush(10.0)
client.close()
missing = [m for m in ("faust", "river", "numpy", "matplotlib", "scipy") if importlib.util.find_spec(m) is None]
print(client.stats.sent, ",".join(missing))
"""
    ran = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    sent, missing = ran.stdout.split()
    assert sent == "120" and missing == "faust,river,numpy,matplotlib,scipy"
    records = asyncio.run(read_all(broker.bootstrap_servers, iso.settings.topics.events, timeout_s=5))
    events = [e for r in records for e in orjson.loads(r.value)["events"]]
    assert len(events) == 120 and {e["model"] for e in events} == {"light"}
    # The command line says what to install instead of a traceback.
    command = subprocess.run([str(venv / "bin" / "stream-monitor"), "--help"], capture_output=True, text=True)
    assert command.returncode == 2 and "pip install 'stream-monitor[worker]'" in command.stderr

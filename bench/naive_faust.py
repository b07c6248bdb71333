"""The way a newcomer would write the monitor: one Faust agent, one event per record, state in a dict.

Run by :mod:`bench.throughput` as a child process; reads its settings from
the environment (``NAIVE_BROKER``, ``NAIVE_TOPIC``, ``NAIVE_EVENTS``,
``NAIVE_RESULT``, ``NAIVE_WEB_PORT``), does the same statistics and detectors
per event (``ModelMonitor.process([event])``), and when it has seen every
event writes the seconds from its first to its last event to ``NAIVE_RESULT``
and exits; it writes its progress every 100 events, so the benchmark can
stop it at a time budget.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

import faust
import orjson

from stream.monitoring.model_monitor import ModelMonitor
from stream.settings import Settings

EXPECTED = int(os.environ.get("NAIVE_EVENTS", "0"))
app = faust.App(
    f"naive-{uuid.uuid4().hex[:8]}",
    broker=os.environ.get("NAIVE_BROKER", "kafka://127.0.0.1:9092"),
    store="memory://",
    web_port=int(os.environ.get("NAIVE_WEB_PORT", "6099")),
    consumer_auto_offset_reset="earliest",
    topic_allow_declare=False,
    # Only to join its group as fast as the worker does (Faust's default waits up to a minute).
    broker_session_timeout=10.0,
    broker_rebalance_timeout=10.0,
    broker_heartbeat_interval=1.0,
)
topic = app.topic(os.environ.get("NAIVE_TOPIC", "events"), key_type=bytes, value_type=bytes, value_serializer="raw")
settings = Settings()
monitors: dict[str, ModelMonitor] = {}
seen = {"events": 0, "first": 0.0}


@app.agent(topic)
async def monitor(stream):
    async for value in stream:
        event = orjson.loads(value)
        model = event["model"]
        state = monitors.get(model)
        if state is None:
            state = monitors[model] = ModelMonitor(model, settings.detection)
        state.process([event])
        seen["events"] += 1
        if seen["events"] == 1:
            seen["first"] = time.perf_counter()
        done = seen["events"] >= EXPECTED
        if done or seen["events"] % 100 == 0:
            # Progress as it goes: the benchmark may stop this agent at its time budget.
            with open(os.environ["NAIVE_RESULT"] + ".tmp", "w") as out:
                json.dump({"events": seen["events"], "seconds": time.perf_counter() - seen["first"]}, out)
            os.replace(os.environ["NAIVE_RESULT"] + ".tmp", os.environ["NAIVE_RESULT"])
        if done:
            os._exit(0)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()

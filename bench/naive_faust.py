"""The way a competent newcomer would write the monitor: one Faust agent, one event per record, river.

Per model and signal (latency, error, confidence, every numeric feature) it
keeps river's own online statistics (``stats.Mean``, ``stats.Var``, the
median and 99th percentile with ``stats.Quantile``) and an ``ADWIN`` drift
detector, updated value by value: the standard tools, used as their
documentation shows. It publishes nothing and keeps no windows, reference
or state in Kafka, so it does less than the worker. It runs on the worker's
own transport (the same fetch wait).

Run by :mod:`bench.throughput` as a child process; reads its settings from
the environment (``NAIVE_BROKER``, ``NAIVE_TOPIC``, ``NAIVE_EVENTS``,
``NAIVE_RESULT``, ``NAIVE_WEB_PORT``), and when it has seen every event
writes the seconds from its first to its last event to ``NAIVE_RESULT`` and
exits; it writes its progress every 100 events, so the benchmark can stop it
at a time budget.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from typing import Any

import faust
import orjson
from river import drift, stats

from stream.worker.faust_compat import use_worker_transport


class NaiveModel:
    """River's running statistics and an ADWIN per signal of one model.

    >>> model = NaiveModel()
    >>> changed = [model.update({"latency_ms": 10.0 + (i >= 500) * 50.0, "error": None}) for i in range(1000)]
    >>> any("latency_ms" in c for c in changed[500:]), round(model.signals["latency_ms"][0].get(), 1)
    (True, 35.0)
    """

    def __init__(self) -> None:
        self.signals: dict[str, tuple[Any, ...]] = {}

    def update(self, event: dict[str, Any]) -> list[str]:
        """Add one event; return the signals whose ADWIN saw a change."""
        values = {"latency_ms": event["latency_ms"], "error": 1.0 if event.get("error") else 0.0}
        if isinstance(event.get("confidence"), int | float):
            values["confidence"] = event["confidence"]
        for name, value in (event.get("features") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[f"features.{name}"] = value
        changed = []
        for name, value in values.items():
            signal = self.signals.get(name)
            if signal is None:
                signal = self.signals[name] = (
                    stats.Mean(),
                    stats.Var(),
                    stats.Quantile(0.5),
                    stats.Quantile(0.99),
                    drift.ADWIN(),
                )
            for statistic in signal:
                statistic.update(value)
            if signal[-1].drift_detected:
                changed.append(name)
        return changed


EXPECTED = int(os.environ.get("NAIVE_EVENTS", "0"))
app = faust.App(
    f"naive-{uuid.uuid4().hex[:8]}",
    broker=os.environ.get("NAIVE_BROKER", "kafka://127.0.0.1:9092"),
    store="memory://",
    # Faust writes its data folder under the working directory by default.
    datadir=tempfile.mkdtemp(prefix="naive-faust-"),
    web_port=int(os.environ.get("NAIVE_WEB_PORT", "6099")),
    consumer_auto_offset_reset="earliest",
    topic_allow_declare=False,
    # Only to join its group as fast as the worker does (Faust's default waits up to a minute).
    broker_session_timeout=10.0,
    broker_rebalance_timeout=10.0,
    broker_heartbeat_interval=1.0,
)
use_worker_transport(app)
topic = app.topic(os.environ.get("NAIVE_TOPIC", "events"), key_type=bytes, value_type=bytes, value_serializer="raw")
monitors: dict[str, NaiveModel] = {}
seen = {"events": 0, "first": 0.0}


@app.agent(topic)
async def monitor(stream):
    async for value in stream:
        event = orjson.loads(value)
        model = event["model"]
        state = monitors.get(model)
        if state is None:
            state = monitors[model] = NaiveModel()
        state.update(event)
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

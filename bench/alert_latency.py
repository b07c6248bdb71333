"""Alert latency of a worker: ``python -m bench.throughput --latency RATE`` or ``--latency-at RATE``.

Part of :mod:`bench.throughput` (``alert_latency_p50_ms`` / ``_p99_ms`` and
``alert_latency_samples``): many models spiking every second, one-second
windows and no cooldown, so that one run gives over a thousand alerts; first
how fast a worker applies this load when sent it faster than it keeps up,
then the delays at half that rate (a latency measured on a growing backlog
measures the backlog).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.progress import Progress

from bench.workload import FEATURES, PARTITIONS, make_events, topics_env
from stream.kafka.embedded_broker import EmbeddedBroker
from stream.kafka.topics import TopicSpec, ensure_topics
from stream.sdk.client import Batch
from stream.worker.child_process import WorkerProcess

LATENCY_RUN_S = 50.0
# The run that finds how fast a worker applies the latency load, sent faster than it keeps up.
CAPACITY_RUN_S = 20.0
# The alert-latency run: this many models, each spiking every LATENCY_PERIOD_S, windows of one second
# and no cooldown, so that each spike is an alert of its own (over a thousand samples in one run).
LATENCY_MODELS = 30
LATENCY_PERIOD_S = 1.0
LATENCY_ENV = {
    "STREAM_MONITOR_WINDOW_S": "1",
    "STREAM_MONITOR_HOP_S": "1",
    "STREAM_MONITOR_HOPPING_S": "10",
    "STREAM_MONITOR_ALERT_COOLDOWN_S": "0.001",
    "STREAM_MONITOR_RESOLVE_AFTER_S": "0.5",
}


async def alert_latency(
    broker: EmbeddedBroker, rate: float, duration_s: float, progress: Progress
) -> tuple[list[float], list[float], float]:
    """Alert delays (ms) for latency incidents on each model while ``rate`` events/s are sent to a worker.

    Each model spikes for 0.3 s every ``LATENCY_PERIOD_S`` (staggered) after a warm-up; with one-second windows
    and no cooldown every spike is an alert of its own. Also returns the rate at which the worker applied
    events after the warm-up: ``rate`` if it kept up, what it manages if not. The second list holds, per
    alert, the part of its delay spent before the worker built it (the rest is its way out through Kafka).
    """
    topic = f"latency-{uuid.uuid4().hex[:8]}"
    env = {**topics_env(topic), **LATENCY_ENV}
    await ensure_topics(broker.bootstrap_servers, [TopicSpec(topic, PARTITIONS, "")])
    worker = WorkerProcess(broker.url, app_id=f"bench-{uuid.uuid4().hex[:8]}", env=env)
    await asyncio.get_running_loop().run_in_executor(None, worker.start)
    alerts_topic = env["STREAM_MONITOR_TOPIC_ALERTS"]
    delays: list[float] = []
    built: list[float] = []
    consumer = AIOKafkaConsumer(
        alerts_topic, bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest", fetch_max_wait_ms=10
    )
    await consumer.start()

    async def collect() -> None:
        async for record in consumer:
            alert = orjson.loads(record.value)
            if alert["detector"] == "zscore" and alert["status"] == "firing":
                delays.append((time.time() - alert["event_time"]) * 1000)
                built.append((alert["timestamp"] - alert["event_time"]) * 1000)

    collector = asyncio.create_task(collect())
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)
    await producer.start()
    # Events made beforehand and sent as SDK envelopes, one per model per tick:
    # building events one by one in Python would make this process, not the
    # worker, the slow part at tens of thousands of events/s.
    rng = np.random.default_rng(1)
    latencies = rng.lognormal(3.0, 0.25, 100_000).tolist()
    names = [f"model-{i:04d}" for i in range(LATENCY_MODELS)]
    templates = [[e for e in make_events(500, 1, FEATURES, 0.0, 1.0, seed=i)] for i in range(LATENCY_MODELS)]
    for i, events in enumerate(templates):
        for e in events:
            e["model"] = names[i]
    task = progress.add_task(f"alert latency at {rate:,.0f} events/s", total=duration_s)
    started = time.monotonic()
    # Ten events per model per envelope: the worker takes records, not events, as its unit of work.
    tick = 0.1
    sent = 0
    loop = asyncio.get_running_loop()
    applied: list[tuple[float, int]] = []  # (when, events the worker had applied), after the warm-up and at the end
    try:
        while (elapsed := time.monotonic() - started) < duration_s:
            if not applied and elapsed >= duration_s * 0.2:
                applied.append(await loop.run_in_executor(None, events_applied, worker))
            due = max(int(elapsed * rate) - sent, 0)
            now = time.time()
            # After a warm-up, each model gets 0.3 s of 30x latencies every LATENCY_PERIOD_S, staggered.
            warm = elapsed >= duration_s * 0.2
            per_model = -(-due // LATENCY_MODELS)
            for index in range(LATENCY_MODELS):
                events = templates[index][: min(per_model, len(templates[index]))]
                offset = index * LATENCY_PERIOD_S / LATENCY_MODELS
                factor = 30.0 if warm and (elapsed + offset) % LATENCY_PERIOD_S < 0.3 else 1.0
                for k, e in enumerate(events):
                    e["timestamp"] = now
                    e["latency_ms"] = latencies[(sent + k) % len(latencies)] * factor
                if events:
                    await producer.send(topic, key=names[index].encode(), value=Batch(names[index], events).envelope())
            sent += per_model * LATENCY_MODELS
            progress.update(task, completed=elapsed)
            await asyncio.sleep(tick)
        applied.append(await loop.run_in_executor(None, events_applied, worker))
        await producer.flush()
        await asyncio.sleep(3.0)
    finally:
        collector.cancel()
        await producer.stop()
        await consumer.stop()
        await asyncio.get_running_loop().run_in_executor(None, worker.kill)
    (t0, n0), (t1, n1) = applied
    return delays, built, (n1 - n0) / (t1 - t0)


def events_applied(worker: WorkerProcess) -> tuple[float, int]:
    """When, and how many events the worker had applied (a busy worker may not answer at once)."""
    for _ in range(20):
        health = worker.health()
        if health is not None:
            return time.monotonic(), health["events"]
    raise RuntimeError(f"the worker did not answer /health; see {worker.log_path}")


def p50_p99(name: str, delays: list[float]) -> dict[str, float | None]:
    """``{name}_p50_ms`` and ``{name}_p99_ms`` of ``delays`` (None, null in JSON, when there are none)."""
    return {f"{name}_p{q}_ms": float(np.percentile(delays, q)) if delays else None for q in (50, 99)}


def latency_figures(delays: list[float]) -> dict[str, float | None]:
    """p50 and p99 of the alert delays and their count."""
    return {**p50_p99("alert_latency", delays), "alert_latency_samples": len(delays)}


def latency_phase(broker: EmbeddedBroker, upper: float, progress: Progress) -> dict[str, float | None]:
    """How fast a worker applies the latency load sent at ``upper`` events/s; then the alert delays at half that."""
    _, _, capacity = asyncio.run(alert_latency(broker, upper, CAPACITY_RUN_S, progress))
    delays, _, applied = asyncio.run(alert_latency(broker, capacity / 2, LATENCY_RUN_S, progress))
    return {
        **latency_figures(delays),
        "alert_latency_events_per_s": round(capacity / 2),
        "alert_latency_applied_events_per_s": round(applied),
        "latency_load_events_per_s": round(capacity),
    }

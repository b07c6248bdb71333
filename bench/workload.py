"""The worker under load, for the benchmarks: the events of :mod:`bench.throughput`, loading them, running a worker.

Shared by :mod:`bench.throughput`, :mod:`bench.alert_latency`,
:mod:`bench.alternate`, :mod:`bench.flame` and :mod:`bench.engine`: the same
events (``MODELS`` models, ``FEATURES`` numeric features each) as SDK
envelopes of ``ENVELOPE`` events or one event per record, and a worker's rate,
memory and CPU time per event over them (:func:`run_worker`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import NamedTuple

import numpy as np
import psutil
from aiokafka import AIOKafkaProducer
from rich.progress import Progress

from stream.kafka.embedded_broker import EmbeddedBroker
from stream.sdk.client import Batch
from stream.worker.child_process import WorkerProcess

MODELS = 10
FEATURES = 10
ENVELOPE = 500
PARTITIONS = 4


def make_events(n: int, models: int, features: int, t0: float, span_s: float, seed: int = 0) -> list[dict]:
    """``n`` events over ``models`` models, event times spread over ``span_s`` from ``t0``."""
    rng = np.random.default_rng(seed)
    latency = rng.lognormal(3.0, 0.25, n)
    values = rng.normal(0.0, 1.0, (n, features)).round(4)
    confidence = rng.uniform(0.5, 1.0, n).round(4)
    names = [f"model-{i:04d}" for i in range(models)]
    feature_names = [f"f{j}" for j in range(features)]
    out = []
    for i in range(n):
        out.append(
            {
                "schema_version": 1,
                "event_id": f"e{i}",
                "timestamp": t0 + i * span_s / n,
                "model": names[i % models],
                "model_version": "1",
                "latency_ms": float(latency[i]),
                "prediction": i % 2,
                "confidence": float(confidence[i]),
                "features": dict(zip(feature_names, values[i].tolist(), strict=True)),
            }
        )
    return out


def as_envelopes(events: list[dict], size: int) -> list[tuple[bytes, bytes]]:
    """SDK envelopes of up to ``size`` events of one model, in event order."""
    by_model: dict[str, list[dict]] = {}
    records = []
    for event in events:
        batch = by_model.setdefault(event["model"], [])
        batch.append(event)
        if len(batch) == size:
            records.append((event["model"].encode(), Batch(event["model"], batch).envelope()))
            by_model[event["model"]] = []
    records += [(m.encode(), Batch(m, b).envelope()) for m, b in by_model.items() if b]
    return records


async def produce(servers: str, topic: str, records: list[tuple[bytes, bytes]], progress: Progress, label: str) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=servers, linger_ms=20, max_batch_size=1 << 20, max_request_size=8 << 20
    )
    await producer.start()
    task = progress.add_task(f"loading {label}", total=len(records))
    try:
        pending = []
        for i, (key, value) in enumerate(records):
            pending.append(await producer.send(topic, key=key, value=value))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending = []
                progress.update(task, completed=i + 1)
        await asyncio.gather(*pending)
        progress.update(task, completed=len(records))
    finally:
        await producer.stop()


def topics_env(events_topic: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {
        "STREAM_MONITOR_TOPIC_EVENTS": events_topic,
        "STREAM_MONITOR_TOPIC_LABELS": f"labels-{suffix}",
        "STREAM_MONITOR_TOPIC_ALERTS": f"alerts-{suffix}",
        "STREAM_MONITOR_TOPIC_DEADLETTER": f"deadletter-{suffix}",
        "STREAM_MONITOR_TOPIC_RETRAIN": f"retrain-{suffix}",
        "STREAM_MONITOR_PARTITIONS": str(PARTITIONS),
    }


class WorkerRun(NamedTuple):
    """What :func:`run_worker` measured of one worker."""

    events_per_s: float
    rss_mb: float
    # The worker's CPU time (all its threads, user and system) per event over the same window: less
    # sensitive than the rate to what else this machine runs meanwhile, the broker included.
    cpu_us_per_event: float


def run_worker(
    broker: EmbeddedBroker, env: dict[str, str], expected: int, progress: Progress, label: str, budget_s: float
) -> WorkerRun:
    """Events per second of one worker over ``expected`` events (or what it did in ``budget_s``), its RSS and CPU."""
    worker = WorkerProcess(broker.url, app_id=f"bench-{uuid.uuid4().hex[:8]}", env=env)
    worker.start()
    process = psutil.Process(worker.pid)
    task = progress.add_task(f"processing {label}", total=expected)
    first_at = first_count = first_cpu = None
    try:
        while True:
            health = worker.health() or {}
            count = health.get("events", 0)
            if count and first_at is None:
                first_at, first_count, first_cpu = time.perf_counter(), count, _cpu_s(process)
            progress.update(task, completed=count)
            elapsed = time.perf_counter() - first_at if first_at is not None else 0.0
            if count >= expected or elapsed > budget_s:
                rss = process.memory_info().rss / 2**20
                done = max(count - first_count, 1)
                cpu_us = (_cpu_s(process) - first_cpu) / done * 1e6
                return WorkerRun(done / max(elapsed, 1e-9), rss, cpu_us)
            time.sleep(0.05)
    finally:
        worker.kill()  # measured already: a graceful stop would only add seconds


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system

"""The broker's own delay under the alert-latency load: ``python -m bench.broker_latency [--rate N]``.

Sends what :mod:`bench.alert_latency` sends a worker (30 models, SDK
envelopes every 100 ms, at ``--rate`` events/s) to the embedded broker and
reads it back with a plain aiokafka consumer waiting at most the worker's
100 ms per fetch, then prints, as one JSON object, the delay from each
envelope's event time to its arrival (p50, p99, samples; the first fifth
left out as warm-up): what the worker's alert latency cannot go below here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.alert_latency import LATENCY_MODELS
from bench.workload import FEATURES, PARTITIONS, make_events
from stream.kafka.embedded_broker import EmbeddedBroker
from stream.kafka.topics import TopicSpec, ensure_topics
from stream.sdk.client import Batch
from stream.worker.faust_compat import FETCH_MAX_WAIT_MS

TICK_S = 0.1


async def delays(servers: str, rate: float, duration_s: float) -> list[float]:
    """Milliseconds from each envelope's last event time to its arrival at a consumer."""
    topic = f"broker-latency-{uuid.uuid4().hex[:8]}"
    await ensure_topics(servers, [TopicSpec(topic, PARTITIONS, "")])
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=servers, auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_MAX_WAIT_MS
    )
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=5)
    await consumer.start()
    await producer.start()
    seen: list[float] = []

    async def collect() -> None:
        async for record in consumer:
            seen.append((time.time() - orjson.loads(record.value)["events"][-1]["timestamp"]) * 1000)

    collector = asyncio.create_task(collect())
    template = make_events(500, 1, FEATURES, 0.0, 1.0)
    names = [f"model-{i:04d}" for i in range(LATENCY_MODELS)]
    started, sent = time.monotonic(), 0
    try:
        while (elapsed := time.monotonic() - started) < duration_s:
            per_model = -(-max(int(elapsed * rate) - sent, 0) // LATENCY_MODELS)
            now = time.time()
            for name in names:
                events = [dict(e, model=name, timestamp=now) for e in template[:per_model]]
                if events:
                    await producer.send(topic, key=name.encode(), value=Batch(name, events).envelope())
            sent += per_model * LATENCY_MODELS
            await asyncio.sleep(TICK_S)
        await producer.flush()
        await asyncio.sleep(2.0)
    finally:
        collector.cancel()
        await producer.stop()
        await consumer.stop()
    return seen[len(seen) // 5 :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=14_000.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with EmbeddedBroker() as broker:
        found = asyncio.run(delays(broker.bootstrap_servers, args.rate, args.seconds))
    figures = {f"broker_p{q}_ms": round(float(np.percentile(found, q)), 1) for q in (50, 99)}
    print(json.dumps({**figures, "samples": len(found)}))


if __name__ == "__main__":
    main()

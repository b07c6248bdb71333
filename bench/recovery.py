"""How a fresh worker's recovery grows with its label join: ``python -m bench.recovery [--entries N ...] [--json]``.

For each size, a new worker group's label-join changelog is filled with N
waiting predictions (as workers write them: one record per model and
checkpoint, ``--per-batch`` entries each, one record per request as workers
send them to the embedded broker), and a worker is started on it.
Printed per size:

- ``changelog_records``: the records those entries make;
- ``ready_s``: from the worker's start until it reports ready (table
  recovery done). The row of 0 entries is the fixed part: start-up and
  joining the group;
- ``broker_cpu_s`` and ``worker_cpu_s``: CPU seconds each process spent
  meanwhile, which tells which of the two the recovery waits for;
- ``worker_rss_mb``: the worker's resident memory once ready, to set
  against a worker that wrote the same entries itself (``bench.label_join``);
- ``restart_ready_s``: the same worker killed once ready and started again on
  its data folder (``STREAM_MONITOR_DATA_DIR``), as a pod restarted with its
  volume: with the join on RocksDB it reads only the changelog written since.

``STREAM_MONITOR_JOIN_STORE=memory`` in the environment measures the join in memory.

The embedded broker is Tansu (see ``stream.kafka.embedded_broker``). A
steady state's figure (``bench.steady``) reads millions of such records;
this shows how the time per record grows with the log, in minutes instead
of an hour.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
import uuid

import orjson
import psutil
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from stream.kafka.embedded_broker import EmbeddedBroker
from stream.kafka.topics import LABEL_JOIN_TABLE, MODEL_STATE_TABLE, TopicSpec, ensure_topics, model_partition
from stream.monitoring.label_join import join_batch
from stream.worker.child_process import WorkerProcess

PARTITIONS = 4
MODELS = 1000


async def fill(servers: str, app_id: str, entries: int, per_batch: int) -> int:
    """Write ``entries`` waiting predictions to the group's join changelog as workers do; returns the records.

    A worker writes a model's new entries as one record per checkpoint: here
    ``per_batch`` entries a record, each in its model's partition, one
    record per request as workers send them to the embedded broker.
    """
    topic = f"{app_id}-{LABEL_JOIN_TABLE}-changelog"
    await ensure_topics(
        servers,
        [TopicSpec(topic, PARTITIONS, ""), TopicSpec(f"{app_id}-{MODEL_STATE_TABLE}-changelog", PARTITIONS, "")],
    )
    by_model: dict[str, dict[str, bytes]] = {}
    now = time.time()
    for i in range(entries):
        entry = orjson.dumps(["P", i % 2, "1", now - 60.0, now, 0.73])
        by_model.setdefault(f"model-{i % MODELS:04d}", {})[f"req-{i:012d}"] = entry
    producer = AIOKafkaProducer(bootstrap_servers=servers, max_batch_size=1, linger_ms=5)
    await producer.start()
    try:
        sent = []
        for model, waiting in by_model.items():
            items = list(waiting.items())
            for seq, start in enumerate(range(0, len(items), per_batch), start=1):
                key, value = join_batch(model, seq, dict(items[start : start + per_batch]))
                partition = model_partition(model, PARTITIONS)
                sent.append(await producer.send(topic, key=key, value=value, partition=partition))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return len(sent)


def measure(broker: EmbeddedBroker, entries: int, per_batch: int = 50) -> dict[str, float]:
    app_id = f"bench-recovery-{uuid.uuid4().hex[:8]}"
    env = {
        "STREAM_MONITOR_PARTITIONS": str(PARTITIONS),
        "STREAM_MONITOR_TOPIC_EVENTS": f"events-{app_id}",
        "STREAM_MONITOR_TOPIC_LABELS": f"labels-{app_id}",
    }
    inputs = [
        TopicSpec(env["STREAM_MONITOR_TOPIC_EVENTS"], PARTITIONS, ""),
        TopicSpec(env["STREAM_MONITOR_TOPIC_LABELS"], PARTITIONS, ""),
    ]
    asyncio.run(ensure_topics(broker.bootstrap_servers, inputs))
    records = asyncio.run(fill(broker.bootstrap_servers, app_id, entries, per_batch))
    assert broker.process is not None
    broker_process = psutil.Process(broker.process.pid)
    broker_cpu = broker_process.cpu_times()
    folder = tempfile.mkdtemp(prefix="bench-recovery-")
    env["STREAM_MONITOR_DATA_DIR"] = folder
    worker = WorkerProcess(broker.url, app_id=app_id, env=env)
    started = time.monotonic()
    try:
        worker.start(ready_timeout_s=1800)
        ready_s = time.monotonic() - started
        assert worker.process is not None
        worker_process = psutil.Process(worker.process.pid)
        worker_cpu = worker_process.cpu_times()
        rss_mb = worker_process.memory_info().rss / 2**20
        after = broker_process.cpu_times()
    finally:
        worker.kill()
    again = WorkerProcess(broker.url, app_id=app_id, env=env)
    started = time.monotonic()
    try:
        again.start(ready_timeout_s=1800)
        restart_ready_s = time.monotonic() - started
    finally:
        again.kill()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "entries": entries,
        "changelog_records": records,
        "ready_s": round(ready_s, 1),
        "broker_cpu_s": round(after.user + after.system - broker_cpu.user - broker_cpu.system, 1),
        "worker_cpu_s": round(worker_cpu.user + worker_cpu.system, 1),
        "worker_rss_mb": round(rss_mb),
        "restart_ready_s": round(restart_ready_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[0, 20_000, 100_000, 200_000])
    parser.add_argument(
        "--per-batch", type=int, default=50, help="join entries per changelog record (one model, one checkpoint)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON list with the figures")
    args = parser.parse_args()
    results = []
    for entries in args.entries:
        # A broker per size: what it already holds is part of what is measured.
        with EmbeddedBroker() as broker:
            results.append(measure(broker, entries, args.per_batch))
    if args.json:
        print(json.dumps(results))
        return
    table = Table(title="a fresh worker recovering its label join from the embedded broker")
    for column in results[0]:
        table.add_column(column, justify="right")
    for row in results:
        table.add_row(*(f"{v:,}" for v in row.values()))
    Console().print(table)


if __name__ == "__main__":
    main()

"""Overload: a producer far faster than the worker. Lag grows on the broker, the
worker's memory does not grow with it, and the worker keeps committing.

On Tansu only: librdkafka's mock cluster answers a fetch with one record batch per
partition, so a backlog of 100 kB envelopes (one batch each) drains at about one
envelope per fetch wait, far slower than the worker, and the test measures the mock.
"""

from __future__ import annotations

import asyncio
import time

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.kafka.embedded_broker import EmbeddedBroker
from stream.sdk.client import Batch

from .conftest import isolated_settings
from .faults import FaultRow, report
from .test_faults import model_events, wait_for_counts

MODELS = [f"busy-{i}" for i in range(8)]
PER_MODEL = 37_500  # 375 s of event time each: inside one hopping window
ENVELOPE = 100
# LLM output text the current detectors ignore: it makes the backlog large in
# bytes (about 570 MB) without making the worker slower to work through it. The
# worker reads ahead a fixed number of bytes (four takes of ingest_batch_mb),
# decodes a model's share of a take at a time, and holds what it applied until
# the checkpoint (checkpoint_max_mb): about 100 MB here with 318 MB or 570 MB
# behind it, so the backlog must be several times that for the bound below to
# tell bounded buffers from memory that grows with the backlog.
TEXT = "lorem ipsum " * 140


@pytest.fixture(scope="module")
def broker():
    with EmbeddedBroker() as tansu:
        yield tansu


def backlog() -> list[tuple[bytes, bytes]]:
    t0 = time.time() - PER_MODEL * 0.01 - 10
    batches = []
    for seed, model in enumerate(MODELS):
        events = model_events(model, PER_MODEL, t0, seed)
        for event in events:
            event["output_text"] = TEXT
        batches += [Batch(model, events[i : i + ENVELOPE]) for i in range(0, PER_MODEL, ENVELOPE)]
    batches.sort(key=lambda b: b.events[0]["timestamp"])
    return [(b.model.encode(), b.envelope()) for b in batches]


async def flood_and_watch(iso, worker, records: list[tuple[bytes, bytes]]) -> list[dict]:
    """Produce every record as fast as the broker takes them; sample lag, commits and RSS until done."""
    servers = iso.settings.bootstrap_servers
    topic = iso.settings.topics.events
    producer = AIOKafkaProducer(bootstrap_servers=servers, max_request_size=8 << 20, linger_ms=5)
    # Only reads the group's committed offsets; never joins the group.
    observer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=iso.settings.app_id, enable_auto_commit=False)
    await producer.start()
    await observer.start()
    partitions = [TopicPartition(topic, p) for p in range(iso.settings.partitions)]
    process = psutil.Process(worker.pid)

    async def produce() -> None:
        for key, value in records:
            await producer.send(topic, key=key, value=value)
        await producer.flush()

    samples = []
    flood = asyncio.create_task(produce())
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            ends = await observer.end_offsets(partitions)
            committed = sum([await observer.committed(tp) or 0 for tp in partitions])
            samples.append(
                {
                    "lag": sum(ends.values()) - committed,
                    "committed": committed,
                    "rss": process.memory_info().rss,
                    "events": worker.health()["events"],
                }
            )
            if flood.done() and samples[-1]["lag"] == 0:
                return samples
            await asyncio.sleep(0.25)
        raise AssertionError(f"the worker never caught up: {samples[-1]}")
    finally:
        await flood
        await producer.stop()
        await observer.stop()


def test_producer_outruns_the_worker_lag_grows_memory_does_not(broker):
    iso = isolated_settings(broker)
    records = backlog()
    backlog_bytes = sum(len(v) for _, v in records)
    worker = iso.worker().start()
    try:
        base_rss = psutil.Process(worker.pid).memory_info().rss
        samples = asyncio.run(flood_and_watch(iso, worker, records))
        seen = wait_for_counts(worker, dict.fromkeys(MODELS, PER_MODEL))
        health = worker.health()
    finally:
        worker.stop()
    produced = len(MODELS) * PER_MODEL
    peak_lag = max(s["lag"] for s in samples)
    growth = max(s["rss"] for s in samples) - base_rss
    commits_under_lag = {s["committed"] for s in samples if s["lag"] > 0} - {0}
    report(
        FaultRow(
            "producer outruns the worker",
            f"{len(records)} envelopes ({backlog_bytes / 1e6:.0f} MB) produced as fast as the broker took them; "
            f"peak lag {peak_lag} records",
            produced,
            sum(seen.values()),
            sum(seen.values()) - produced,
            health["dead_letters"],
            f"RSS +{growth / 1e6:.0f} MB over {base_rss / 1e6:.0f} MB; "
            f"{len(commits_under_lag)} distinct commits while behind",
        )
    )
    assert peak_lag >= len(records) // 4, "the producer never got ahead: the test did not overload the worker"
    assert len(commits_under_lag) >= 2, f"the worker stopped committing while behind: {samples}"
    # The backlog stays on the broker: the worker reads ahead a bounded buffer, and holds
    # at most checkpoint_max_mb of applied records until their checkpoint (bounded by their
    # count alone, this test's large envelopes took the growth to a third of the backlog).
    assert growth < backlog_bytes / 4, f"RSS grew {growth / 1e6:.0f} MB for a {backlog_bytes / 1e6:.0f} MB backlog"
    assert seen == dict.fromkeys(MODELS, PER_MODEL)
    assert health["dead_letters"] == 0

"""Throughput, alert latency and memory of the worker: ``python -m bench.throughput [--events N] [--json]``.

Starts the embedded broker, loads the same N events (default 1,000,000; 10
models, 10 numeric features, confidence and prediction each) twice, as SDK
envelopes and one event per record, and measures in one run:

- ``events_per_s``: a worker with the default monitor set on the envelopes;
- ``single_record_events_per_s``: the same worker on one event per record;
- ``naive_faust_events_per_s``: what a competent newcomer would write: one
  Faust agent, one event per record, river's running statistics and an
  ADWIN per signal (:mod:`bench.naive_faust`; it does less than the worker);
- ``raw_decode_events_per_s``: an aiokafka consumer that only decodes the
  envelopes with orjson (the ceiling for this machine);
- ``alert_latency_p50_ms`` / ``_p99_ms``: from producing the event that
  completes an incident to receiving its alert, over
  ``alert_latency_samples`` alerts (30 models spiking every second,
  one-second windows, no cooldown). The rate,
  ``alert_latency_events_per_s``, is half what a worker applies of this
  load when sent it faster than it keeps up (``latency_load_events_per_s``,
  at most ``events_per_s``): a latency measured on a growing backlog
  measures the backlog. ``alert_latency_applied_events_per_s`` is what the
  worker applied meanwhile: below the rate sent, it fell behind (its cost
  per event grows as envelopes get smaller);
- ``rss_mb``: the worker's resident memory after the envelope run, and
  ``rss_mb_1000_models`` after 1,000 models with 10 features each have sent
  100 events (before any reference exists);
- ``rss_mb_1000_models_steady`` (with ``rss_peak_mb_1000_models``, the most
  it held at any moment) and ``recovery_s_1000_models``: 1,000 models
  past their references and warm-ups with labels flowing, and the seconds a
  second worker takes to be processing again after the first is killed
  (:mod:`bench.steady`; about 45 minutes; ``--skip-steady`` leaves it out and
  reports them as null).

Throughput counts from a worker's first processed event to its last, so
start-up and group joining are left out; a phase that would take longer
than ``--budget-s`` (15; the naive agent at most 15) is stopped there and its rate is over the events it
processed by then. Prints a table with the targets of
the throughput issue, or with ``--json`` one object with exactly those keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench import steady as steady_state
from stream.kafka.embedded_broker import EmbeddedBroker, free_port
from stream.kafka.topics import TopicSpec, ensure_topics
from stream.sdk.client import Batch
from stream.worker.child_process import WorkerProcess

MODELS = 10
FEATURES = 10
ENVELOPE = 500
PARTITIONS = 4
NAIVE_BUDGET_S = 15.0
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
KEYS = (
    "events_per_s",
    "single_record_events_per_s",
    "naive_faust_events_per_s",
    "raw_decode_events_per_s",
    "alert_latency_p50_ms",
    "alert_latency_p99_ms",
    "alert_latency_samples",
    "alert_latency_events_per_s",
    "alert_latency_applied_events_per_s",
    "latency_load_events_per_s",
    "rss_mb",
    "rss_mb_1000_models",
    "rss_mb_1000_models_steady",
    "rss_peak_mb_1000_models",
    "recovery_s_1000_models",
)


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


async def raw_decode(servers: str, topic: str, expected_events: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen, started = 0, time.perf_counter()
        while seen < expected_events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                for record in records:
                    message = orjson.loads(record.value)
                    seen += len(message["events"]) if "events" in message else 1
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


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


def run_group(broker: EmbeddedBroker, env: dict[str, str], expected: int, workers: int, budget_s: float) -> float:
    """Events per second of ``workers`` worker processes in one group, together, over the same records."""
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    group = [WorkerProcess(broker.url, app_id=app_id, env=env) for _ in range(workers)]
    try:
        for worker in group:
            worker.start()
        # Wait until the group settled: every partition assigned once, across the workers.
        deadline = time.monotonic() + 60
        while sum(len((w.health() or {}).get("assigned", [])) for w in group) < PARTITIONS:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not share the partitions within 60 s")
            time.sleep(0.1)
        first_at = first_count = None
        while True:
            count = sum((w.health() or {}).get("events", 0) for w in group)
            if count and first_at is None:
                first_at, first_count = time.perf_counter(), count
            elapsed = time.perf_counter() - first_at if first_at is not None else 0.0
            if count >= expected or elapsed > budget_s:
                return (count - first_count) / max(elapsed, 1e-9)
            time.sleep(0.05)
    finally:
        for worker in group:
            worker.kill()


def scale_out(n: int, budget_s: float) -> dict[str, float]:
    """Envelope throughput of one worker, then of two in one group, on the same events."""
    console = Console(stderr=True)
    out = {}
    with EmbeddedBroker() as broker, Progress(console=console, transient=False) as progress:
        servers = broker.bootstrap_servers
        events = make_events(n, MODELS, FEATURES, time.time() - 700, 600.0)
        topic = f"env-{uuid.uuid4().hex[:8]}"
        asyncio.run(ensure_topics(servers, [TopicSpec(topic, PARTITIONS, "")]))
        asyncio.run(produce(servers, topic, as_envelopes(events, ENVELOPE), progress, "envelopes"))
        del events
        for workers in (1, 2):
            task = progress.add_task(f"{workers} worker(s) in one group", total=None)
            out[f"events_per_s_{workers}_workers"] = run_group(broker, topics_env(topic), n, workers, budget_s)
            progress.update(task, total=1, completed=1)
    return out


def run_naive(broker: EmbeddedBroker, topic: str, expected: int, progress: Progress, budget_s: float) -> float:
    result = Path(tempfile.mkdtemp()) / "naive.json"
    env = {
        **os.environ,
        "NAIVE_BROKER": broker.url,
        "NAIVE_TOPIC": topic,
        "NAIVE_EVENTS": str(expected),
        "NAIVE_RESULT": str(result),
        "NAIVE_WEB_PORT": str(free_port()),
    }
    task = progress.add_task("naive Faust agent", total=None)
    command = [sys.executable, "-m", "bench.naive_faust"]
    log = result.with_suffix(".log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = None
    try:
        while process.poll() is None:
            if deadline is None and result.exists():
                deadline = time.monotonic() + budget_s  # the budget counts from the first event
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        progress.update(task, total=1, completed=1)
        log.close()
    if not result.exists():
        raise RuntimeError(
            f"the naive agent processed nothing; its log: {result.with_suffix('.log').read_text()[-2000:]}"
        )
    data = json.loads(result.read_text())
    return data["events"] / data["seconds"]


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


def measure(n: int, budget_s: float, steady: bool = True) -> dict[str, float | None]:
    console = Console(stderr=True)
    result: dict[str, float | None] = {}
    with EmbeddedBroker() as broker, Progress(console=console, transient=False) as progress:
        servers = broker.bootstrap_servers
        events = make_events(n, MODELS, FEATURES, time.time() - 700, 600.0)
        envelope_topic, single_topic = f"env-{uuid.uuid4().hex[:8]}", f"single-{uuid.uuid4().hex[:8]}"
        specs = [TopicSpec(envelope_topic, PARTITIONS, ""), TopicSpec(single_topic, PARTITIONS, "")]
        asyncio.run(ensure_topics(servers, specs))
        asyncio.run(produce(servers, envelope_topic, as_envelopes(events, ENVELOPE), progress, "envelopes"))
        singles = [(e["model"].encode(), orjson.dumps(e)) for e in events]
        asyncio.run(produce(servers, single_topic, singles, progress, "single-event records"))
        del events, singles
        result["raw_decode_events_per_s"] = asyncio.run(raw_decode(servers, envelope_topic, n))
        envelopes = run_worker(broker, topics_env(envelope_topic), n, progress, "envelopes", budget_s)
        result["events_per_s"], result["rss_mb"] = envelopes.events_per_s, envelopes.rss_mb
        single = run_worker(broker, topics_env(single_topic), n, progress, "single-event records", budget_s)
        result["single_record_events_per_s"] = single.events_per_s
        # The naive agent runs at a steady rate from its first second: NAIVE_BUDGET_S tells it well enough.
        result["naive_faust_events_per_s"] = run_naive(broker, single_topic, n, progress, min(budget_s, NAIVE_BUDGET_S))
        result.update(latency_phase(broker, result["events_per_s"], progress))
        many_topic = f"many-{uuid.uuid4().hex[:8]}"
        asyncio.run(ensure_topics(servers, [TopicSpec(many_topic, PARTITIONS, "")]))
        many = make_events(100_000, 1000, FEATURES, time.time() - 700, 600.0, seed=2)
        asyncio.run(produce(servers, many_topic, as_envelopes(many, 100), progress, "1,000 models"))
        result["rss_mb_1000_models"] = run_worker(
            broker, topics_env(many_topic), len(many), progress, "1,000 models", 10 * budget_s
        ).rss_mb
        del many
        figures = steady_state.measure(broker, progress) if steady else {}
        result["rss_mb_1000_models_steady"] = figures.get("rss_mb_1000_models_steady")
        result["rss_peak_mb_1000_models"] = figures.get("rss_peak_mb_1000_models")
        result["recovery_s_1000_models"] = figures.get("recovery_s_1000_models")
    return {key: result[key] for key in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object with exactly the figures")
    parser.add_argument(
        "--budget-s", type=float, default=15.0, help="longest a throughput phase runs; its rate is over what it did"
    )
    parser.add_argument(
        "--latency-at",
        type=float,
        metavar="EVENTS_PER_S",
        help=(
            "instead: only the alert-latency phase, at this rate; prints p50, p99, the sample count, and "
            "p50 and p99 of the time until the worker built the alert"
        ),
    )
    parser.add_argument(
        "--latency",
        type=float,
        metavar="UPPER_EVENTS_PER_S",
        help="instead: only the alert-latency phases, the first sending this rate (at most events_per_s normally)",
    )
    parser.add_argument(
        "--skip-steady",
        action="store_true",
        help="leave out the 45-minute steady-state run (its two figures are then null)",
    )
    parser.add_argument(
        "--scale-out", action="store_true", help="instead: one worker, then two in one group, on the same envelopes"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    if args.latency_at:
        with EmbeddedBroker() as broker, Progress(console=Console(stderr=True), transient=True) as progress:
            delays, built, applied = asyncio.run(alert_latency(broker, args.latency_at, LATENCY_RUN_S, progress))
        figures = {**latency_figures(delays), **p50_p99("alert_built", built)}
        print(json.dumps({**figures, "alert_latency_applied_events_per_s": round(applied)}))
        return
    if args.latency:
        with EmbeddedBroker() as broker, Progress(console=Console(stderr=True), transient=True) as progress:
            print(json.dumps(latency_phase(broker, args.latency, progress)))
        return
    if args.scale_out:
        figures = scale_out(args.events, args.budget_s)
        if args.json:
            print(json.dumps(figures))
            return
        table = Table(title=f"scale-out, {args.events:,} events in envelopes ({time.perf_counter() - started:.0f} s)")
        table.add_column("workers")
        table.add_column("events/s", justify="right")
        for key, value in figures.items():
            table.add_row(key.split("_")[3], f"{value:,.0f}")
        ratio = figures["events_per_s_2_workers"] / figures["events_per_s_1_workers"]
        table.add_row("2 / 1", f"{ratio:.2f}")
        Console().print(table)
        return
    result = measure(args.events, args.budget_s, steady=not args.skip_steady)
    if args.json:
        print(json.dumps(result))
        return
    r = result
    fast = r["events_per_s"] >= 100_000 and r["events_per_s"] >= 0.25 * r["raw_decode_events_per_s"]
    single = r["single_record_events_per_s"]
    targets = {
        "events_per_s": (">= 100,000 and >= 0.25 x raw decode", fast),
        "single_record_events_per_s": (
            ">= 30,000 and >= 3 x naive",
            single >= 30_000 and single >= 3 * r["naive_faust_events_per_s"],
        ),
        "alert_latency_p99_ms": (
            "<= 1000",
            r["alert_latency_p99_ms"] is not None and r["alert_latency_p99_ms"] <= 1000,
        ),
        "alert_latency_samples": (">= 1000", r["alert_latency_samples"] >= 1000),
        "rss_mb_1000_models_steady": (
            "<= 400",
            r["rss_mb_1000_models_steady"] is not None and r["rss_mb_1000_models_steady"] <= 400,
        ),
        "recovery_s_1000_models": (
            "< 60",
            r["recovery_s_1000_models"] is not None and r["recovery_s_1000_models"] < 60,
        ),
    }
    table = Table(title=f"stream-monitor throughput, {args.events:,} events ({time.perf_counter() - started:.0f} s)")
    for column in ("figure", "value", "target", "met"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for key, value in r.items():
        target, met = targets.get(key, ("", None))
        if value is not None:
            shown = f"{value:,.1f}"
        elif key.startswith("alert"):
            shown = "no alert"
        else:
            shown = "skipped" if args.skip_steady else "not ready in time"
        table.add_row(key, shown, target, "" if met is None else ("yes" if met else "NO"))
    table.add_row("events / raw decode", f"{r['events_per_s'] / r['raw_decode_events_per_s']:.2f}", "", "")
    ratio = r["single_record_events_per_s"] / r["naive_faust_events_per_s"]
    table.add_row("single record / naive", f"{ratio:.2f}", "", "")
    Console().print(table)


if __name__ == "__main__":
    main()

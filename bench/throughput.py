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
  it held at any moment, and ``rss_mean_mb_1000_models`` and
  ``rss_p90_mb_1000_models`` over the second half of its rounds, sampled
  ``rss_samples_1000_models`` times) and ``recovery_s_1000_models``: 1,000 models
  past their references and warm-ups with labels flowing, and the seconds a
  second worker takes to be processing again after the first is killed
  (:mod:`bench.steady`, most of the command's time; ``--skip-steady`` leaves it out and
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

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench import steady as steady_state
from bench.alert_latency import LATENCY_RUN_S, alert_latency, latency_figures, latency_phase, p50_p99
from bench.workload import (
    ENVELOPE,
    FEATURES,
    MODELS,
    PARTITIONS,
    as_envelopes,
    make_events,
    produce,
    run_worker,
    topics_env,
)
from stream.kafka.embedded_broker import EmbeddedBroker, free_port
from stream.kafka.topics import TopicSpec, ensure_topics
from stream.worker.child_process import WorkerProcess

NAIVE_BUDGET_S = 15.0
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
)
# The figures bench.steady measures, passed on as it gives them.
STEADY_KEYS = (
    "rss_mb_1000_models_steady",
    "rss_peak_mb_1000_models",
    "rss_mean_mb_1000_models",
    "rss_p90_mb_1000_models",
    "rss_samples_1000_models",
    "recovery_s_1000_models",
)


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
        for key in STEADY_KEYS:
            result[key] = figures.get(key)
    return {key: result[key] for key in KEYS + STEADY_KEYS}


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
        help="leave out the steady-state run, most of the command's time (its figures are then null)",
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

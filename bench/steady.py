"""A worker's memory with 1,000 models at steady state, and the time another takes to recover them.

Part of :mod:`bench.throughput` (``rss_mb_1000_models_steady``,
``recovery_s_1000_models``); ``python -m bench.steady`` runs it alone.

Steady state means what a long-running worker holds, not what it holds after
a model's first events: every model is past its reference
(``reference_events``, over ``reference_min_s`` of event time) and its
multivariate warm-up, its hopping window is full, and labels flow, one for
every fourth prediction, so the label join holds predictions and
performance is measured. The stream is sent as SDK envelopes in rounds, one
envelope per model per round, and the next round goes out only once the
worker has applied the one before: the memory is read after each round, at
the same point of the work, and at the end the highest it reached at any
moment (``rss_peak_mb_1000_models``), which is what a memory limit must
allow. Between those readings the memory is sampled every quarter second:
over the second half of the rounds, its mean and 90th percentile
(``rss_mean_mb_1000_models``, ``rss_p90_mb_1000_models``, with
``rss_samples_1000_models``), since a single reading lands anywhere on the
sawtooth a round leaves.

Recovery: the worker is killed (SIGKILL, as a crashed machine), one more
envelope per model is sent, and a replacement joins the same group at once,
as an orchestrator restarts a pod. The clock runs from the kill until the
replacement has applied an event: the group noticing the death
(``group_timeout_s``), the rebalance, restoring 1,000 models' states and the
label join from the changelog (``changelog_records``), and the first records.

With ``--workers 2`` two workers share the models from the start, each
keeping a standby copy of the other's tables (Faust's
``table_standby_replicas``, 1); the memory figures are the two workers'
sum. Recovery is then a failover: one worker is killed, and the clock runs
until the survivor has applied the extra envelope of every model, its own
and those it took over.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from stream.kafka.embedded_broker import EmbeddedBroker
from stream.kafka.topics import LABEL_JOIN_TABLE, MODEL_STATE_TABLE, TopicSpec, ensure_topics
from stream.sdk.client import Batch
from stream.settings import Settings
from stream.worker.child_process import WorkerProcess, WorkerStartError

MODELS = 1000
FEATURES = 10
PARTITIONS = 4
ENVELOPE = 200
# Past the multivariate detector's warm-up (2,000 events), which comes after the reference.
EVENTS_PER_MODEL = 2_200
# The hopping window full, and the reference's minimum span, several times over.
SPAN_S = 1_200.0
LABEL_EVERY = 4
ROUND_TIMEOUT_S = 600.0
SAMPLE_EVERY_S = 0.25
RECOVERY_TIMEOUT_S = 900.0


def rounds(
    models: list[str], t0: float, per_model: int = EVENTS_PER_MODEL, labels_on: bool = True, seed: int = 3
) -> Iterator[tuple[list[tuple[bytes, bytes]], list]]:
    """Per round, one envelope of ``ENVELOPE`` events per model, and the labels of a quarter of them."""
    rng = np.random.default_rng(seed)
    names = [f"f{j}" for j in range(FEATURES)]
    for r in range(per_model // ENVELOPE):
        envelopes, labels = [], []
        for model in models:
            values = rng.normal(0.0, 1.0, (ENVELOPE, FEATURES)).round(4).tolist()
            latency = rng.lognormal(3.0, 0.25, ENVELOPE).tolist()
            confidence = rng.uniform(0.5, 1.0, ENVELOPE).round(4).tolist()
            events = []
            for i in range(ENVELOPE):
                k = r * ENVELOPE + i
                events.append(
                    {
                        "schema_version": 1,
                        "event_id": f"{model}-{k}",
                        "request_id": f"{model}-{k}",
                        "timestamp": t0 + k * SPAN_S / per_model,
                        "model": model,
                        "model_version": "1",
                        "latency_ms": latency[i],
                        "prediction": k % 2,
                        "confidence": confidence[i],
                        "features": dict(zip(names, values[i], strict=True)),
                    }
                )
                if labels_on and k % LABEL_EVERY == 0:
                    right = rng.random() < confidence[i]
                    label = {
                        "schema_version": 1,
                        "request_id": f"{model}-{k}",
                        "model": model,
                        "label": k % 2 if right else 1 - k % 2,
                        "timestamp": events[-1]["timestamp"] + 1.0,
                    }
                    labels.append((model.encode(), orjson.dumps(label)))
            envelopes.append((model.encode(), Batch(model, events).envelope()))
        yield envelopes, labels


async def send(servers: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=servers, linger_ms=20, max_batch_size=1 << 20, max_request_size=8 << 20
    )
    await producer.start()
    try:
        pending = [await producer.send(topic, key=key, value=value) for key, value in records]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def events_of(worker: WorkerProcess) -> int | None:
    """Events the worker applied, or None while its health page does not answer (a busy worker)."""
    health = worker.health()
    return None if health is None else health.get("events", 0)


def answered_health(worker: WorkerProcess, timeout_s: float = 60.0) -> dict:
    """The worker's health page, asking until it answers."""
    deadline = time.monotonic() + timeout_s
    while (health := worker.health()) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker's health page did not answer in {timeout_s:g} s; see {worker.log_path}")
        time.sleep(0.2)
    return health


def wait_for(workers: list[WorkerProcess], events: int, timeout_s: float = ROUND_TIMEOUT_S) -> None:
    """Until the workers together have applied ``events``."""
    deadline = time.monotonic() + timeout_s
    while (applied := sum(events_of(w) or 0 for w in workers)) < events:
        for worker in workers:
            if not worker.running:
                raise RuntimeError(f"a worker exited; see {worker.log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers applied {applied} of {events} events in {timeout_s:g} s")
        time.sleep(0.2)


def wait_for_shared(workers: list[WorkerProcess], timeout_s: float = 120.0) -> None:
    """Until every worker owns some of the events topic's partitions and together all of them."""
    deadline = time.monotonic() + timeout_s
    while True:
        owned = [(w.health() or {}).get("assigned", []) for w in workers]
        if all(owned) and sum(len(o) for o in owned) == PARTITIONS:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers did not share the {PARTITIONS} partitions in {timeout_s:g} s: {owned}")
        time.sleep(0.2)


def rss_mb(workers: list[WorkerProcess]) -> float:
    return sum(psutil.Process(w.pid).memory_info().rss for w in workers) / 2**20


def peak_rss_mb(workers: list[WorkerProcess]) -> float:
    """The workers' highest resident memory so far (Linux's ``VmHWM``), summed: what a memory limit must allow."""
    total_kb = 0
    for worker in workers:
        with open(f"/proc/{worker.pid}/status") as status:
            total_kb += next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return total_kb / 2**10


class RssSampler:
    """The workers' summed RSS every ``SAMPLE_EVERY_S``, on a thread of its own, each with the round under way.

    One reading after each round is one point of a sawtooth: a round frees
    tens of megabytes, which stay resident until the worker hands them back.
    The samples of the second half of the rounds say what a steady worker
    holds most of the time (mean) and nearly all of it (90th percentile).
    """

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers
        self.round = 0
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            with contextlib.suppress(psutil.Error):
                self.samples.append((self.round, rss_mb(self.workers)))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self, from_round: int) -> dict[str, float]:
        """``rss_mean_mb_1000_models``, ``rss_p90_mb_1000_models`` and their sample count, from ``from_round`` on."""
        mb = np.array([value for r, value in self.samples if r >= from_round])
        if mb.size == 0:
            return {}
        return {
            "rss_mean_mb_1000_models": float(mb.mean()),
            "rss_p90_mb_1000_models": float(np.percentile(mb, 90)),
            "rss_samples_1000_models": mb.size,
        }


def measure(
    broker: EmbeddedBroker,
    progress: Progress,
    n_models: int = MODELS,
    per_model: int = EVENTS_PER_MODEL,
    labels_on: bool = True,
    recovery: bool = True,
    workers: int = 1,
) -> dict[str, float | list[float] | None]:
    """``rss_mb_1000_models_steady``, its peak, ``rss_mb_by_round`` and ``recovery_s_1000_models`` with its parts."""
    if workers not in (1, 2):
        raise ValueError(f"workers: 1 or 2, not {workers}")
    servers = broker.bootstrap_servers
    suffix = uuid.uuid4().hex[:8]
    env = {
        "STREAM_MONITOR_TOPIC_EVENTS": f"steady-{suffix}",
        "STREAM_MONITOR_TOPIC_LABELS": f"steady-labels-{suffix}",
        "STREAM_MONITOR_TOPIC_ALERTS": f"alerts-{suffix}",
        "STREAM_MONITOR_TOPIC_DEADLETTER": f"deadletter-{suffix}",
        "STREAM_MONITOR_TOPIC_RETRAIN": f"retrain-{suffix}",
        "STREAM_MONITOR_PARTITIONS": str(PARTITIONS),
    }
    events_topic, labels_topic = env["STREAM_MONITOR_TOPIC_EVENTS"], env["STREAM_MONITOR_TOPIC_LABELS"]
    specs = [TopicSpec(events_topic, PARTITIONS, ""), TopicSpec(labels_topic, PARTITIONS, "")]
    asyncio.run(ensure_topics(servers, specs))
    models = [f"steady-{i:04d}" for i in range(n_models)]
    app_id = f"bench-steady-{suffix}"
    first = WorkerProcess(broker.url, app_id=app_id, env=env).start(ready_timeout_s=120)
    group = [first]
    second = None
    out: dict[str, float | list[float] | None] = {}
    try:
        if workers == 2:
            group.append(WorkerProcess(broker.url, app_id=app_id, env=env).start(ready_timeout_s=120))
            wait_for_shared(group)
        task = progress.add_task(f"steady state, {n_models:,} models", total=n_models * per_model)
        t0 = time.time() - SPAN_S - 3_600.0
        sent = 0
        by_round = []
        stream = rounds(models, t0, per_model, labels_on)
        pending_labels: list = []
        with RssSampler(group) as sampler:
            for envelopes, labels in stream:
                asyncio.run(send(servers, events_topic, envelopes))
                # Labels follow their predictions by a round, as delayed labels do.
                asyncio.run(send(servers, labels_topic, pending_labels))
                pending_labels = labels
                sent += n_models * ENVELOPE
                wait_for(group, sent)
                progress.update(task, completed=sent)
                by_round.append(rss_mb(group))
                sampler.round = len(by_round)
                progress.console.print(f"round {len(by_round)}: {sent:,} events applied, RSS {by_round[-1]:,.0f} MB")
            asyncio.run(send(servers, labels_topic, pending_labels))
            time.sleep(5)  # the last labels joined, the last checkpoint written
        out["rss_mb_1000_models_steady"] = rss_mb(group)
        out["rss_peak_mb_1000_models"] = peak_rss_mb(group)
        out.update(sampler.figures(from_round=len(by_round) // 2))
        out["rss_mb_by_round"] = [round(mb, 1) for mb in by_round]
        if not recovery:
            return out

        task = progress.add_task("recovery after a kill", total=None)
        out["changelog_records"] = float(asyncio.run(changelog_records(servers, app_id)))
        progress.console.print(f"{out['changelog_records']:,.0f} changelog records for a replacement to read")
        # One more envelope per model waits for the replacement, so that its first event
        # applied tells when it is processing again.
        extra = [(m.encode(), Batch(m, [_event(m, t0 + SPAN_S + 1.0)]).envelope()) for m in models]
        if workers == 2:
            out.update(failover(group, servers, events_topic, extra))
            out["group_timeout_s"] = Settings().group_timeout_s
            progress.update(task, total=1, completed=1)
            return out
        killed_at = time.monotonic()
        first.kill()
        asyncio.run(send(servers, events_topic, extra))
        second = WorkerProcess(broker.url, app_id=app_id, env=env)
        try:
            second.start(ready_timeout_s=RECOVERY_TIMEOUT_S)
        except WorkerStartError:
            # None in the figures: not processing again within RECOVERY_TIMEOUT_S.
            progress.console.print(f"the replacement was not ready within {RECOVERY_TIMEOUT_S:g} s")
            out["recovery_s_1000_models"] = out["recovery_ready_s"] = None
            return out
        ready_at = time.monotonic()
        while not events_of(second):
            if time.monotonic() > ready_at + ROUND_TIMEOUT_S:
                raise RuntimeError(f"the replacement applied nothing in {ROUND_TIMEOUT_S:g} s; see {second.log_path}")
            time.sleep(0.05)
        out["recovery_s_1000_models"] = time.monotonic() - killed_at
        out["recovery_ready_s"] = ready_at - killed_at
        out["group_timeout_s"] = Settings().group_timeout_s
        progress.update(task, total=1, completed=1)
    finally:
        for worker in group:
            worker.kill()
        if second is not None:
            second.kill()
    return out


def failover(
    group: list[WorkerProcess], servers: str, topic: str, extra: list[tuple[bytes, bytes]]
) -> dict[str, float | None]:
    """Kill the first worker; seconds until the survivor has applied every record of ``extra``, and its work meanwhile.

    ``recovery_s_1000_models`` (None: not within ``RECOVERY_TIMEOUT_S``);
    ``failover_state_loads``, the model states the survivor read back from
    its table meanwhile (each model at least once: it drops its own live
    states when the group rebalances); ``failover_replayed``, records it
    read again and skipped because a state already held them.
    """
    dead, survivor = group
    # Read before the kill, and never taken as 0 when the page is slow to answer: a busy
    # survivor's unanswered health page once made a failover look done in a second.
    before = answered_health(survivor)
    target = before["events"] + len(extra)
    killed_at = time.monotonic()
    dead.kill()
    asyncio.run(send(servers, topic, extra))
    out: dict[str, float | None] = {"recovery_s_1000_models": None}
    while (events_of(survivor) or 0) < target:
        if not survivor.running:
            raise RuntimeError(f"the surviving worker exited; see {survivor.log_path}")
        if time.monotonic() > killed_at + RECOVERY_TIMEOUT_S:
            break
        time.sleep(0.05)
    else:
        out["recovery_s_1000_models"] = time.monotonic() - killed_at
    after = answered_health(survivor)
    for name in ("state_loads", "replayed"):
        out[f"failover_{name}"] = float(after.get(name, 0) - before.get(name, 0))
    return out


async def changelog_records(servers: str, app_id: str) -> int:
    """Records in the worker group's two changelog topics: what a replacement reads to recover."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers)
    await consumer.start()
    try:
        tps = [
            TopicPartition(f"{app_id}-{table}-changelog", p)
            for table in (MODEL_STATE_TABLE, LABEL_JOIN_TABLE)
            for p in range(PARTITIONS)
        ]
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


def _event(model: str, timestamp: float) -> dict:
    return {
        "schema_version": 1,
        "event_id": f"{model}-after",
        "timestamp": timestamp,
        "model": model,
        "model_version": "1",
        "latency_ms": 20.0,
        "prediction": 1,
        "confidence": 0.9,
        "features": {f"f{j}": 0.0 for j in range(FEATURES)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object with the figures")
    parser.add_argument("--models", type=int, default=MODELS, help="fewer for a quick try; the figures are for 1,000")
    parser.add_argument(
        "--events-per-model", type=int, default=EVENTS_PER_MODEL, help="fewer: a state short of steady, smaller"
    )
    parser.add_argument("--no-labels", action="store_true", help="no labels: nothing waits in the label join")
    parser.add_argument("--skip-recovery", action="store_true", help="the memory only, not the kill and recovery")
    parser.add_argument(
        "--workers", type=int, choices=(1, 2), default=1, help="2: the models shared, recovery a failover"
    )
    args = parser.parse_args()
    console = Console(stderr=True)
    with EmbeddedBroker() as broker, Progress(console=console, transient=False) as progress:
        figures = measure(
            broker,
            progress,
            args.models,
            args.events_per_model,
            not args.no_labels,
            not args.skip_recovery,
            args.workers,
        )
    if args.json:
        print(json.dumps(figures))
        return
    table = Table(title=f"{args.models:,} models at steady state")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        if value is None:
            shown = f"not within {RECOVERY_TIMEOUT_S:g} s"
        elif isinstance(value, list):
            shown = ", ".join(f"{v:,.0f}" for v in value)
        else:
            shown = f"{value:,.1f}"
        table.add_row(key, shown)
    Console().print(table)


if __name__ == "__main__":
    main()

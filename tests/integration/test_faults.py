"""Faults inflicted on a real worker and broker: crashes, rebalances, outages, poison, overload.

Every test checks the same promise: each event produced is counted exactly
once in the model's statistics, or sits on the dead-letter topic with a
reason; and the worker is still running at the end. Each test adds a row to
the fault table printed after the run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from types import SimpleNamespace

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from stream.kafka.embedded_broker import EmbeddedBroker, free_port
from stream.kafka.follow import read_all
from stream.kafka.topics import TopicSpec, ensure_topics, ensure_topics_sync
from stream.sdk.client import MonitorClient, make_event
from stream.worker.faust_compat.consumer import stored_ends

from .conftest import isolated_settings
from .faults import FaultRow, LocalS3, TcpProxy, broker_kind, report
from .helpers import publish, wait_for_events


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def model_events(model: str, n: int, t0: float, seed: int, spike: range | None = None) -> list[dict]:
    rng = np.random.default_rng(seed)
    latency = rng.lognormal(3, 0.2, n)
    out = []
    for i in range(n):
        slow = spike is not None and i in spike
        out.append(
            make_event(
                model,
                "1",
                2_000.0 + i % 7 if slow else float(latency[i]),
                i % 2,
                timestamp=t0 + i * 0.01,
                event_id=f"{model}-{seed}-{i}",
                features={"amount": float(rng.normal(100, 15))},
            )
        )
    return out


def events_of(models: dict[str, int]) -> list[dict]:
    """So many events of each model, from a minute ago, one model after the other."""
    t0 = time.time() - 60
    return [e for seed, (m, n) in enumerate(models.items()) for e in model_events(m, n, t0, seed)]


def restarted(iso, env: dict[str, str] | None = None):
    """A new worker in the group of the one just killed, once it is ready (recovery can take a while)."""
    worker = iso.worker(env)
    worker.start(ready_timeout_s=120)
    return worker


def killed_mid_stream(iso, total: int, env: dict[str, str] | None = None) -> dict:
    """Start a worker on a backlog of ``total`` events and SIGKILL it after 3,000; its health then."""
    worker = iso.worker(env)
    worker.start()
    try:
        before = wait_for_events(worker, 3000)
        assert before["events"] < total, "the worker finished before the kill; produce more"
        assert worker.kill() == -9
    finally:
        worker.stop()
    return before


def counted(worker, models) -> dict[str, int]:
    """Events in each model's statistics, 0 for a model the worker does not know (yet)."""
    out = {}
    for model in models:
        try:
            stats = get_json(f"{worker.url}/models/{model}/stats?window=hopping")
        except (urllib.error.HTTPError, OSError):
            out[model] = 0
            continue
        out[model] = sum(v["events"] for v in stats["versions"].values())
    return out


def first_error(worker, lines: int = 60) -> str:
    """The log from the worker's first error on (a crash's cause comes long before its last lines)."""
    log = worker.log_path.read_text(errors="replace").splitlines() if worker.log_path.exists() else []
    start = next((i for i, line in enumerate(log) if "[ERROR]" in line or "[CRITICAL]" in line), None)
    return worker.log_tail() if start is None else "\n".join(log[start : start + lines])


def wait_for_counts(worker, expected: dict[str, int], timeout_s: float = 120.0, settle_s: float = 3.0) -> dict:
    """Counts once every model reached its expected number and nothing more arrived for ``settle_s``."""
    deadline = time.monotonic() + timeout_s
    seen = counted(worker, expected)
    while any(seen[m] < n for m, n in expected.items()):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"counts {seen}, expected {expected}; health {worker.health()}; worker log ({worker.log_path}):\n"
                f"{first_error(worker)}"
            )
        time.sleep(0.5)
        seen = counted(worker, expected)
    time.sleep(settle_s)  # duplicates, if any, would show up now
    return counted(worker, expected)


def test_sigkill_mid_stream_loses_no_event_and_counts_none_twice(broker):
    iso = isolated_settings(broker)
    models = {"alpha": 12000, "beta": 12000, "gamma": 12000}
    events = events_of(models)
    # Produced before the worker starts, so that it dies a quarter of the way
    # through a backlog however fast it reads (small envelopes: hundreds of
    # records in flight when it dies).
    ensure_topics_sync(iso.settings)
    asyncio.run(publish(iso, events, batch_size=10))
    before = killed_mid_stream(iso, len(events))
    worker = restarted(iso)
    try:
        seen = wait_for_counts(worker, models)
        health = worker.health()
        assert seen == models
        # The restarted worker re-read records the dead one had applied but not
        # committed, and recognised each from the offset saved in the state.
        report(
            FaultRow(
                "worker SIGKILL mid-stream",
                f"3 models, {len(events)} events in envelopes of 10; SIGKILL after {before['events']}; restart",
                len(events),
                sum(seen.values()),
                sum(seen.values()) - len(events),
                health["dead_letters"],
                f"exact; {health['replayed']} replayed records recognised and skipped",
                broker_kind(broker),
            )
        )
        assert health["dead_letters"] == 0
    finally:
        worker.stop()


async def publish_labels(iso, labels: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=iso.settings.bootstrap_servers)
    await producer.start()
    try:
        for label in labels:
            await producer.send(iso.settings.topics.labels, key=label["model"].encode(), value=orjson.dumps(label))
        await producer.flush()
    finally:
        await producer.stop()


def joined(worker, models) -> dict[str, dict[str, int]]:
    """Each model's label-join outcomes (joined, joined_label_first, duplicate_label, ...)."""
    return {m: get_json(f"{worker.url}/models/{m}/stats")["labels"] for m in models}


def test_sigkill_with_labels_flowing_joins_each_label_exactly_once(broker):
    # Predictions and their labels wait in the log; the worker dies part-way through
    # both. Its replacement restores the states and the label join from the last
    # checkpoint and reads the rest again: a label applied twice would count twice
    # or show as a duplicate, one lost would leave its prediction unjoined.
    iso = isolated_settings(broker)
    models = {"zeta": 12000, "eta": 12000}
    events = events_of(models)
    for i, event in enumerate(events):
        event["request_id"] = f"r-{i}"
    labels = [
        {"schema_version": 1, "request_id": e["request_id"], "model": e["model"], "label": i % 2}
        | {"timestamp": e["timestamp"] + 5.0}
        for i, e in enumerate(events)
    ]
    ensure_topics_sync(iso.settings)
    asyncio.run(publish(iso, events, batch_size=10))
    asyncio.run(publish_labels(iso, labels))
    env = {"STREAM_MONITOR_JOIN_PREDICTIONS": "always"}
    before = killed_mid_stream(iso, len(events), env)
    worker = restarted(iso, env)
    try:
        assert wait_for_counts(worker, models) == models
        deadline = time.monotonic() + 60
        outcomes = joined(worker, models)
        while any(o.get("joined", 0) + o.get("joined_label_first", 0) < models[m] for m, o in outcomes.items()):
            assert time.monotonic() < deadline, f"labels joined {outcomes}, expected {models}"
            time.sleep(0.5)
            outcomes = joined(worker, models)
        time.sleep(3)  # a label applied twice would show up now
        outcomes = joined(worker, models)
        for model, n in models.items():
            got = outcomes[model]
            assert got.get("joined", 0) + got.get("joined_label_first", 0) == n, got
            # A label that came before its prediction waited, then joined: counted under both.
            assert set(got) <= {"joined", "joined_label_first", "label_before_prediction"}, got
            assert got.get("label_before_prediction", 0) == got.get("joined_label_first", 0), got
        health = worker.health()
        total = sum(o.get("joined", 0) + o.get("joined_label_first", 0) for o in outcomes.values())
        report(
            FaultRow(
                "worker SIGKILL with labels flowing",
                f"2 models, {len(events)} events in envelopes of 10 and a label each; SIGKILL after "
                f"{before['events']} events; restart",
                len(labels),
                total,
                total - len(labels),
                health["dead_letters"],
                "every label joined exactly once",
                broker_kind(broker),
            )
        )
    finally:
        worker.stop()


def test_records_stay_uncommitted_until_their_model_state_is_checkpointed(broker):
    # With checkpoints an hour apart, the first worker never saves a state, while
    # Faust's own commit timer (every 2.8 s) runs many times. Had any record been
    # committed before its state was saved, the restarted worker would skip it.
    iso = isolated_settings(broker)
    models = {"delta": 1500, "epsilon": 1500}
    events = events_of(models)
    worker = iso.worker({"STREAM_MONITOR_CHECKPOINT_INTERVAL_S": "3600"})
    worker.start()
    try:
        asyncio.run(publish(iso, events, batch_size=50))
        assert wait_for_counts(worker, models, settle_s=6.0) == models
        first = worker.health()
        assert first["checkpoints"] == 0
        assert worker.kill() == -9
    finally:
        worker.stop()
    worker = restarted(iso)
    try:
        assert wait_for_counts(worker, models) == models
        health = worker.health()
        # Every record was read again (none committed), applied once, and saved at the next checkpoint.
        assert health["records"] == first["records"] == len(events) // 50
        assert health["replayed"] == 0
        wait_until(lambda: worker.health()["checkpoints"] > 0, 10)
    finally:
        worker.stop()


def wait_until(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


POISON_MONITORS = """
[defaults.signals.latency_ms]
detectors = ["zscore", "tests.poison_detector:PoisonRule"]
"""


def test_a_record_that_makes_a_detector_raise_is_dead_lettered_and_undone(broker, tmp_path):
    iso = isolated_settings(broker)
    monitors = tmp_path / "monitors.toml"
    monitors.write_text(POISON_MONITORS)
    t0 = time.time() - 60
    events = model_events("poisoned", 600, t0, 7)
    poison_at = (50, 130, 599)
    for i in poison_at:
        events[i]["latency_ms"] = 666.0  # PoisonRule raises ValueError on this value
    # No checkpoint during the test: each poisoned record is recovered from by
    # re-applying every record since the start, the earlier poisoned ones included.
    env = {"STREAM_MONITOR_MONITORS_FILE": str(monitors), "STREAM_MONITOR_CHECKPOINT_INTERVAL_S": "3600"}
    worker = iso.worker(env_extra=env)
    worker.start()
    try:
        # Envelopes of 100 for the first 500, then one record per event.
        asyncio.run(publish(iso, events[:500], batch_size=100))
        asyncio.run(publish(iso, events[500:], batch_size=1))
        expected = {"poisoned": len(events) - len(poison_at)}
        seen = wait_for_counts(worker, expected)
        assert seen == expected
        stats = get_json(f"{worker.url}/models/poisoned/stats?window=hopping")["versions"]["1"]
        # The window update ran before the detector raised; the saved state must not show it.
        assert stats["window"]["count"] == expected["poisoned"]
        assert stats["window"]["latency_ms"]["max"] < 666.0
        letters = [
            json.loads(r.value)
            for r in asyncio.run(read_all(broker.bootstrap_servers, iso.settings.topics.deadletter, expect=3))
        ]
        assert len(letters) == len(poison_at)
        assert all(letter["error_type"] == "processing_error" for letter in letters)
        assert all("ValueError: poisoned value 666.0" in letter["reason"] for letter in letters)
        # An event rejected out of a batch is written alone; a one-event record as it came.
        values = [json.loads(base64.b64decode(letter["value_b64"])) for letter in letters]
        rejected = sorted(v["events"][0]["event_id"] if "events" in v else v["event_id"] for v in values)
        assert rejected == sorted(events[i]["event_id"] for i in poison_at)
        health = worker.health()
        assert health["dead_letters"] == len(poison_at)
        report(
            FaultRow(
                "detector raises on one event",
                "a plugged-in detector raises on latency 666: twice inside envelopes of 100, once alone",
                len(events),
                seen["poisoned"],
                0,
                len(letters),
                "only the 3 poisoned events dead-lettered with ValueError; window count excludes them",
                broker_kind(broker),
            )
        )
    finally:
        worker.stop()


def in_background(coro_fn, *args) -> threading.Thread:
    thread = threading.Thread(target=lambda: asyncio.run(coro_fn(*args)), daemon=True)
    thread.start()
    return thread


async def publish_paced(iso, events: list[dict], batch_size: int, chunks: int, pause_s: float) -> None:
    """Publish ``events`` in ``chunks`` parts with a pause between them: records keep arriving for a while."""
    step = -(-len(events) // chunks)
    for start in range(0, len(events), step):
        await publish(iso, events[start : start + step], batch_size=batch_size)
        await asyncio.sleep(pause_s)


def models_on_every_partition(partitions: int, per_partition: int = 2) -> list[str]:
    """Model names whose keys land ``per_partition`` times on each partition (Kafka's murmur2 partitioner)."""
    counts = [0] * partitions
    out = []
    for i in range(1000):
        name = f"m{i}"
        p = (murmur2(name.encode()) & 0x7FFFFFFF) % partitions
        if counts[p] < per_partition:
            counts[p] += 1
            out.append(name)
        if len(out) == partitions * per_partition:
            return out
    raise AssertionError("no spread found")


def test_a_worker_joining_and_leaving_mid_stream_moves_state_exactly(tansu):
    broker = tansu
    iso = isolated_settings(broker)
    models = models_on_every_partition(iso.settings.partitions)
    per_model = 3000
    t0 = time.time() - 60
    # Every model has a latency incident from the end of phase 2b into phase 3.
    streams = {m: model_events(m, per_model, t0, 20 + k, spike=range(1500, 1540)) for k, m in enumerate(models)}
    bounds = ((0, 1000), (1000, 1300), (1300, 1520), (1520, per_model))
    phase = [[e for m in models for e in streams[m][lo:hi]] for lo, hi in bounds]
    a = iso.worker()
    b = iso.worker()
    a.start()
    try:
        asyncio.run(publish(iso, phase[0], batch_size=20))
        wait_for_events(a, len(phase[0]))
        # B joins while phase 2a trickles in: partitions and their state move to it.
        producing = in_background(publish_paced, iso, phase[1], 20, 20, 0.5)
        b.start(ready_timeout_s=120)
        producing.join()
        asyncio.run(publish(iso, phase[2], batch_size=20))
        wait_for_counts(a, {m: 1520 for m in models})
        took_over = b.health()["events"]
        assert took_over > 0, "the second worker was given no partition"
        # B leaves while phase 3 is being produced: its partitions go back to A.
        producing = in_background(publish_paced, iso, phase[3], 20, 10, 0.3)
        refetches = b.health()["refetches"]
        assert b.stop() == 0
        producing.join()
        seen = wait_for_counts(a, {m: per_model for m in models})
        assert seen == {m: per_model for m in models}
        alerts = [
            json.loads(r.value)
            for r in asyncio.run(read_all(broker.bootstrap_servers, iso.settings.topics.alerts, timeout_s=5))
        ]
        firing: dict[str, set[str]] = {}
        copies = 0
        for alert in alerts:
            if alert["status"] != "firing":
                continue
            ids = firing.setdefault(alert["fingerprint"], set())
            copies += alert["alert_id"] in ids
            ids.add(alert["alert_id"])
        latency = {a["model"] for a in alerts if a["signal"] == "latency_ms" and a["status"] == "firing"}
        assert latency == set(models), "an incident's alert was lost"
        # The incident went on after the move, within the cooldown: folded by the
        # state that moved, never fired a second time.
        assert all(len(ids) == 1 for ids in firing.values()), firing
        report(
            FaultRow(
                "rebalance: worker joins, then leaves",
                f"{len(models)} models over 4 partitions; B joined during phase 2 (took {took_over} events), "
                "left during phase 3; latency incident across the moves",
                len(models) * per_model,
                sum(seen.values()),
                sum(seen.values()) - len(models) * per_model,
                a.health()["dead_letters"],
                f"exact; {len(firing)} alert series, each fired once; {copies} republished copies (same id); "
                f"{refetches + a.health()['refetches']} holes left by Faust read again",
                broker_kind(broker),
            )
        )
    finally:
        b.stop()
        a.stop()


def wait_for_log(worker, text: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in worker.log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged; log:\n{worker.log_tail()}")
        time.sleep(0.2)


def test_a_worker_started_before_the_broker_waits_and_then_proceeds():
    late = EmbeddedBroker(port=free_port())
    iso = isolated_settings(late)
    worker = iso.worker()
    started: list[BaseException | None] = []

    def start() -> None:
        try:
            worker.start(ready_timeout_s=120)
            started.append(None)
        except BaseException as exc:
            started.append(exc)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    try:
        wait_for_log(worker, f"waiting for Kafka at {late.bootstrap_servers}")
        time.sleep(3)
        assert worker.running, worker.log_tail()
        late.start()
        thread.join(150)
        assert started == [None]
        events = model_events("late", 500, time.time() - 30, 3)
        asyncio.run(publish(iso, events, batch_size=50))
        assert wait_for_counts(worker, {"late": 500}) == {"late": 500}
        report(
            FaultRow(
                "broker not up at worker start",
                "worker started against a closed port; broker started 3 s after the first 'waiting for Kafka' line",
                500,
                500,
                0,
                worker.health()["dead_letters"],
                "worker waited with backoff, then ran; exact",
            )
        )
    finally:
        worker.stop()
        thread.join(5)
        late.stop()


async def test_the_broker_going_away_mid_run_costs_no_event_and_no_restart():
    broker_port = free_port()
    proxy = TcpProxy(broker_port).start()
    # The broker tells every client to connect through the proxy: cutting the
    # proxy is the broker going away for the worker and the SDK at once.
    own = EmbeddedBroker(port=broker_port, advertised_port=proxy.port).start()
    try:
        iso = isolated_settings(SimpleNamespace(url=f"kafka://127.0.0.1:{proxy.port}"))
        worker = iso.worker()
        await asyncio.to_thread(worker.start)
        t0 = time.time() - 60
        events = model_events("steady", 3000, t0, 5)
        before, during, after = events[:1000], events[1000:2000], events[2000:]
        client = MonitorClient(iso.settings.broker, topic=iso.settings.topics.events, batch_size=50, send_timeout_s=5)
        await client.start()
        try:
            for event in before:
                assert client.record_event(event)
            assert await client.flush(30)
            await asyncio.to_thread(wait_for_counts, worker, {"steady": 1000}, 60.0, 0.0)
            pid = worker.pid

            proxy.cut()
            slowest = 0.0
            for event in during:
                t = time.perf_counter()
                assert client.record_event(event), "the SDK dropped an event during the outage"
                slowest = max(slowest, time.perf_counter() - t)
                await asyncio.sleep(0.005)  # requests keep coming for about 10 s
            await asyncio.sleep(5)
            assert client.stats.buffered > 0 and client.stats.dropped == 0
            assert worker.running and worker.pid == pid, worker.log_tail()
            outage_failures = client.stats.send_failures

            proxy.restore()
            for event in after:
                assert client.record_event(event)
            assert await client.flush(90), client.stats
        finally:
            await client.close()
        seen = await asyncio.to_thread(wait_for_counts, worker, {"steady": 3000}, 150.0)
        health = worker.health()
        assert seen == {"steady": 3000}
        assert worker.pid == pid
        assert slowest < 0.05, f"record() blocked the caller for {slowest:.3f} s"
        report(
            FaultRow(
                "broker unreachable mid-run",
                f"all connections cut for ~{len(during) * 0.005 + 5:.0f} s while the SDK kept recording "
                f"({outage_failures} failed sends retried; slowest record() {slowest * 1000:.2f} ms)",
                3000,
                seen["steady"],
                seen["steady"] - 3000,
                health["dead_letters"],
                f"same worker process reconnected; exact; {health['duplicate_batches']} retried envelopes skipped, "
                f"{health['replayed']} replayed records skipped",
            )
        )
        worker.stop()
    finally:
        proxy.stop()
        own.stop()


HANGING_MONITORS = """
[defaults.signals.latency_ms]
detectors = ["tests.poison_detector:HangingRule"]
"""


def test_a_worker_stuck_in_a_detector_still_exits_within_the_grace_period(broker, tmp_path):
    iso = isolated_settings(broker)
    monitors = tmp_path / "monitors.toml"
    monitors.write_text(HANGING_MONITORS)
    events = model_events("stuck", 20, time.time() - 10, 9)
    events[-1]["latency_ms"] = 666.0  # HangingRule blocks the event loop on this value
    grace_s = 3.0
    worker = iso.worker(
        env_extra={"STREAM_MONITOR_MONITORS_FILE": str(monitors), "STREAM_MONITOR_SHUTDOWN_GRACE_S": str(grace_s)}
    )
    worker.start()
    asyncio.run(publish(iso, events[:-1], batch_size=1))
    wait_for_events(worker, len(events) - 1)
    asyncio.run(publish(iso, events[-1:], batch_size=1))
    deadline = time.monotonic() + 30
    while worker.health() is not None and time.monotonic() < deadline:
        time.sleep(0.2)  # the web server stops answering once the loop is blocked
    assert worker.health() is None, "the hanging detector never blocked the worker"
    started = time.monotonic()
    code = worker.stop(grace_s=30.0)
    took = time.monotonic() - started
    report(
        FaultRow(
            "detector hangs (event loop blocked)",
            f"a plugged-in detector sleeps an hour on one event; SIGTERM with a {grace_s:g} s grace period",
            len(events),
            len(events) - 1,
            0,
            0,
            f"worker exited with code {code} after {took:.1f} s (SIGKILL would have come at 30 s)",
            broker_kind(broker),
        )
    )
    assert code == 3, f"exit code {code}: the watchdog did not end the process"
    assert took < grace_s + 5
    assert "shutdown took longer than 3 s" in worker.log_tail()


def test_the_broker_killed_and_restarted_on_its_store_keeps_records_offsets_and_state():
    store = LocalS3().start()
    own = EmbeddedBroker(port=free_port(), storage=f"s3://{store.bucket}/", env=store.env).start()
    try:
        iso = isolated_settings(SimpleNamespace(url=own.url))
        models = {"north": 3000, "south": 3000}
        # Envelopes of 50: Tansu on moto's S3 slows down as its bucket fills (with envelopes of 10,
        # 600 records, the second worker applied 730 events in 120 s), and the test is about the
        # broker's crash, not its speed.
        envelope = 50
        t0 = time.time() - 60
        streams = {m: model_events(m, n, t0, 30 + k) for k, (m, n) in enumerate(models.items())}
        first = [e for m in models for e in streams[m][:1000]]
        backlog = [e for m in models for e in streams[m][1000:]]

        worker = iso.worker()
        worker.start(ready_timeout_s=120)
        asyncio.run(publish(iso, first, batch_size=envelope))
        wait_for_counts(worker, {m: 1000 for m in models})
        assert worker.stop() == 0
        # A backlog, so that the next worker is in the middle of it when the broker dies.
        asyncio.run(publish(iso, backlog, batch_size=envelope))
        worker = iso.worker()
        worker.start(ready_timeout_s=120)
        try:
            before = wait_for_events(worker, 1000, timeout_s=120)
            pid = worker.pid
            own.kill()
            assert not own.running
            time.sleep(3)
            own.start()  # same port, same store
            seen = wait_for_counts(worker, models, timeout_s=180)
            assert seen == models
            assert worker.pid == pid, "the worker should have reconnected, not restarted"
            resumed = worker.health()
            assert worker.stop() == 0
        finally:
            worker.stop()
        # Everything the worker saved went through the broker before and after its crash: a third
        # worker must find every model's state in the changelog and nothing left to read.
        own.kill()
        own.start()
        worker = iso.worker()
        worker.start(ready_timeout_s=120)
        try:
            recovered = wait_for_counts(worker, models, timeout_s=120)
            health = worker.health()
            assert recovered == models
            assert health["events"] == 0 and health["replayed"] == 0, health
            report(
                FaultRow(
                    "broker SIGKILL mid-stream, restarted on its S3 store",
                    f"2 models, {len(first) + len(backlog)} events in envelopes of {envelope}; broker killed after the "
                    f"worker applied {before['events']} of a {len(backlog)}-event backlog, restarted 3 s later; "
                    "then killed again and a new worker started",
                    len(first) + len(backlog),
                    sum(seen.values()),
                    sum(seen.values()) - len(first) - len(backlog),
                    resumed["dead_letters"],
                    f"same worker process reconnected; exact; {resumed['replayed']} replayed records skipped; "
                    "the next worker recovered every state from the changelog and re-read no record",
                    "Tansu on moto's S3",
                )
            )
        finally:
            worker.stop()
    finally:
        own.stop()
        store.stop()


def _batch_dates(store: LocalS3, topic: str) -> list[str]:
    """The S3 modification time of each batch object of ``topic``'s partition 0, in offset order."""
    query = urllib.parse.urlencode({"list-type": "2", "prefix": "clusters/"})
    with urllib.request.urlopen(f"{store.url}/{store.bucket}?{query}", timeout=10) as response:
        listing = response.read().decode()
    objects = re.findall(r"<Key>([^<]*)</Key>.*?<LastModified>([^<]*)</LastModified>", listing)
    return [modified for key, modified in sorted(objects) if f"/topics/{topic}/partitions/0000000000/records/" in key]


async def test_a_changelog_is_read_to_its_last_record_when_tansu_on_s3_names_an_earlier_end():
    """Tansu on S3 names the end of a partition by its batch objects' modification times, kept to the second.

    When the last two batches land in the same second, its ListOffsets answer
    is one record short; :func:`stored_ends`, which Faust's recovery reads its
    end offsets from, must still reach the last record.
    """
    store = LocalS3().start()
    own = EmbeddedBroker(port=free_port(), storage=f"s3://{store.bucket}/", env=store.env).start()
    topic = "short-end"
    producer = AIOKafkaProducer(bootstrap_servers=own.bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=own.bootstrap_servers)
    try:
        await ensure_topics(own.bootstrap_servers, [TopicSpec(topic, 1, "")])
        await producer.start()
        await consumer.start()
        tp = TopicPartition(topic, 0)
        # One request per record, so each is its own batch object; a pair that straddles a
        # second boundary is followed by another until the last two share their second.
        for _ in range(5):
            await producer.send_and_wait(topic, b"record", partition=0)
            await producer.send_and_wait(topic, b"record", partition=0)
            dates = _batch_dates(store, topic)
            if dates[-1] == dates[-2]:
                break
        assert dates[-1] == dates[-2], f"no two batches written within one second: {dates}"
        written = len(dates)
        listed = await consumer.end_offsets([tp])
        assert listed[tp] < written, "Tansu now names the right end: stored_ends may no longer be needed"
        assert (await stored_ends(consumer, listed))[tp] == written
        # Where ListOffsets is right, looking past it changes nothing.
        assert (await stored_ends(consumer, {tp: written}))[tp] == written
    finally:
        await consumer.stop()
        await producer.stop()
        own.stop()
        store.stop()

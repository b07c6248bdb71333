"""The producer SDK for inference services.

Events are buffered per model and sent as envelopes (one Kafka record holds
many events of one model, keyed by the model name), which costs the worker a
fraction of one record per event. Recording an event never blocks for long
and never raises because Kafka is slow or down: the buffer is bounded, and
what does not fit is dropped and counted in :attr:`ClientStats.dropped`.

Async services::

    client = MonitorClient("kafka://127.0.0.1:9092")
    await client.start()
    client.record(model="fraud-scorer", model_version="2.3.0",
                  latency_ms=12.4, prediction=1, confidence=0.91,
                  features={"amount": 129.5})
    await client.close()          # flushes what is buffered

Threaded services use :class:`SyncMonitorClient`, which runs the same sender
on a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream.contracts import SCHEMA_VERSION
from stream.privacy.protect import FieldProtection
from stream.sdk.resource_sampler import ResourceSampler
from stream.settings import parse_broker_url

log = logging.getLogger(__name__)


def make_event(
    model: str,
    model_version: str,
    latency_ms: float,
    prediction: Any,
    *,
    timestamp: float | None = None,
    event_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An inference event with id, timestamp and schema version filled in.

    >>> ev = make_event("m", "1", 12.5, 0, timestamp=10.0, event_id="e1", confidence=0.9)
    >>> ev["event_id"], ev["timestamp"], ev["confidence"], ev["schema_version"]
    ('e1', 10.0, 0.9, 1)
    """
    event = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id or uuid.uuid4().hex,
        "timestamp": time.time() if timestamp is None else timestamp,
        "model": model,
        "model_version": model_version,
        "latency_ms": latency_ms,
        "prediction": prediction,
    }
    event.update({k: v for k, v in fields.items() if v is not None})
    return event


@dataclass(slots=True)
class ClientStats:
    """What the SDK did with the events it was given."""

    recorded: int = 0
    sent: int = 0
    dropped: int = 0
    records_sent: int = 0
    send_failures: int = 0

    @property
    def buffered(self) -> int:
        """Events accepted but not yet acknowledged by Kafka (or dropped)."""
        return self.recorded - self.sent - self.dropped


@dataclass(slots=True)
class Batch:
    """Events of one model sent as one envelope; a retry keeps the ``batch_id``."""

    model: str
    events: list[dict[str, Any]]
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def envelope(self) -> bytes:
        """The record value: the envelope with its batch id."""
        return orjson.dumps({"schema_version": SCHEMA_VERSION, "batch_id": self.batch_id, "events": self.events})


class EventBuffer:
    """A bounded, thread-safe buffer of events grouped by model, with batches to send again.

    A batch whose send failed goes back whole, under its id, and is taken again
    before any newer event of its model: if Kafka did store it and only the
    acknowledgement was lost, the worker recognises the copy by its id.

    >>> buf = EventBuffer(max_events=2)
    >>> buf.add({"model": "a"}), buf.add({"model": "a"}), buf.add({"model": "b"})
    (True, True, False)
    >>> [(b.model, len(b.events)) for b in buf.take(batch_size=10)]
    [('a', 2)]
    """

    def __init__(self, max_events: int) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self._by_model: dict[str, deque[dict[str, Any]]] = {}
        self._retry: dict[str, Batch] = {}
        self._size = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    def add(self, event: dict[str, Any]) -> bool:
        """Buffer one event; False (and nothing buffered) when full."""
        with self._lock:
            if self._size >= self.max_events:
                return False
            queue = self._by_model.get(event["model"])
            if queue is None:
                queue = self._by_model[event["model"]] = deque()
            queue.append(event)
            self._size += 1
            return True

    def retry(self, batch: Batch) -> int:
        """Keep a failed batch to send again, as far as it fits; returns how many events did not."""
        with self._lock:
            room = max(self.max_events - self._size, 0)
            kept = batch.events[:room]
            if kept:
                self._retry[batch.model] = Batch(batch.model, kept, batch.batch_id)
                self._size += len(kept)
            return len(batch.events) - len(kept)

    def take(self, batch_size: int) -> list[Batch]:
        """Batches to send: failed ones first, then up to ``batch_size`` new events per other model."""
        with self._lock:
            out = list(self._retry.values())
            self._retry.clear()
            waiting = {b.model for b in out}
            for model, queue in self._by_model.items():
                if not queue or model in waiting:
                    continue
                n = min(batch_size, len(queue))
                out.append(Batch(model, [queue.popleft() for _ in range(n)]))
            self._size -= sum(len(b.events) for b in out)
            for model in [m for m, q in self._by_model.items() if not q]:
                del self._by_model[model]
        return out


class MonitorClient:
    """Async SDK: ``record()`` events, a background task sends envelopes."""

    def __init__(
        self,
        broker: str = "kafka://127.0.0.1:9092",
        *,
        topic: str = "inference-events",
        batch_size: int = 500,
        linger_s: float = 0.1,
        max_buffer: int = 100_000,
        send_timeout_s: float = 10.0,
        kafka_options: dict[str, Any] | None = None,
        protection: FieldProtection | None = None,
        resources: ResourceSampler | bool = False,
    ) -> None:
        """``kafka_options``: TLS/SASL for the producer (``Settings.kafka_options()``); ``protection``: fields
        to drop, hash, redact or encrypt before sending; ``resources``: attach host resource samples."""
        self.bootstrap_servers = parse_broker_url(broker)
        self.kafka_options = kafka_options or {}
        self.protection = protection
        self.sampler = ResourceSampler() if resources is True else (resources or None)
        self.topic = topic
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.send_timeout_s = send_timeout_s
        self.stats = ClientStats()
        self._buffer = EventBuffer(max_buffer)
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Start the background sender; connects to Kafka in the background too."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="stream-monitor-sender")

    def record(self, model: str, model_version: str, latency_ms: float, prediction: Any, **fields: Any) -> bool:
        """Record one prediction; False if the buffer was full and it was dropped."""
        return self.record_event(make_event(model, model_version, latency_ms, prediction, **fields))

    def record_event(self, event: dict[str, Any]) -> bool:
        """Record a ready-made event dict; False if it was dropped."""
        self.stats.recorded += 1
        if self.sampler is not None and "resources" not in event:
            event = {**event, "resources": self.sampler.sample()}
        if self.protection is not None:
            event = self.protection.apply(event)
        if self._buffer.add(event):
            if len(self._buffer) >= self.batch_size:
                self._poke()
            return True
        self.stats.dropped += 1
        return False

    def _poke(self) -> None:
        if self._wake is None or self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake.set()
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _connect(self) -> AIOKafkaProducer:
        delay = 0.2
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers,
                linger_ms=5,
                max_request_size=8 * 1024 * 1024,
                request_timeout_ms=int(self.send_timeout_s * 1000),
                **self.kafka_options,
            )
            try:
                await producer.start()
                return producer
            except (KafkaError, OSError) as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                log.warning("stream-monitor SDK: Kafka not reachable (%s); retrying", exc)
                if self._closing:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _run(self) -> None:
        assert self._wake is not None
        self._producer = await self._connect()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.linger_s)
            self._wake.clear()
            await self._send_buffered()
            if self._closing and not len(self._buffer):
                return

    async def _send_buffered(self) -> None:
        producer = self._producer
        assert producer is not None
        while True:
            batches = self._buffer.take(self.batch_size)
            if not batches:
                return
            pending = []
            for batch in batches:
                try:
                    future = await producer.send(self.topic, value=batch.envelope(), key=batch.model.encode())
                except (KafkaError, OSError) as exc:
                    self._failed(batch, exc)
                    continue
                pending.append((batch, future))
            for batch, future in pending:
                try:
                    await future
                except (KafkaError, OSError) as exc:
                    self._failed(batch, exc)
                    continue
                self.stats.sent += len(batch.events)
                self.stats.records_sent += 1
            if len(self._buffer) < self.batch_size:
                return

    def _failed(self, batch: Batch, exc: BaseException) -> None:
        self.stats.send_failures += 1
        lost = self._buffer.retry(batch)
        self.stats.dropped += lost
        log.warning("stream-monitor SDK: send failed (%s); %d events to send again", exc, len(batch.events) - lost)

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything recorded so far is sent; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.stats.buffered > 0 and loop.time() < deadline:
            self._poke()
            await asyncio.sleep(0.01)
        return self.stats.buffered == 0

    async def close(self, timeout_s: float = 10.0) -> None:
        """Flush (up to ``timeout_s``), then stop; unsent events are counted as dropped."""
        self._closing = True
        self._poke()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except (TimeoutError, KafkaError, OSError):
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        unsent = len(self._buffer)
        if unsent:
            self._buffer.take(unsent)
            self.stats.dropped += unsent
            log.warning("stream-monitor SDK: %d events not delivered at close", unsent)

    async def __aenter__(self) -> MonitorClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SyncMonitorClient:
    """Thread-based SDK for synchronous services; same options as MonitorClient."""

    def __init__(self, broker: str = "kafka://127.0.0.1:9092", **options: Any) -> None:
        self._client = MonitorClient(broker, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stream-monitor-sdk", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._client.start(), self._loop).result()

    @property
    def stats(self) -> ClientStats:
        """Counters of recorded, sent and dropped events."""
        return self._client.stats

    def record(self, model: str, model_version: str, latency_ms: float, prediction: Any, **fields: Any) -> bool:
        """Record one prediction without blocking; False if dropped."""
        return self._client.record(model, model_version, latency_ms, prediction, **fields)

    def record_event(self, event: dict[str, Any]) -> bool:
        """Record a ready-made event dict; False if dropped."""
        return self._client.record_event(event)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until buffered events are sent; False on timeout."""
        future = asyncio.run_coroutine_threadsafe(self._client.flush(timeout_s), self._loop)
        return future.result(timeout_s + 5)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush, stop the sender and its thread."""
        future = asyncio.run_coroutine_threadsafe(self._client.close(timeout_s), self._loop)
        try:
            future.result(timeout_s + 5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> SyncMonitorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

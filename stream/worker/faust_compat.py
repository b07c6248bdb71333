"""Every private name of Faust and aiokafka the worker relies on, checked when this module is imported.

At-least-once delivery rests on a few of Faust's internals, which have
changed between releases (``_add_gap`` became a coroutine, ``_gap`` an
interval tree, ``_new_offset`` gained a ``+ 1``). They are all used here and
nowhere else, and :func:`check_faust` stops the worker with one line naming
the installed versions when one of them is missing or has another shape.
``pyproject.toml`` pins the versions tested.

What is worked around, each worth reporting upstream:

- **Fetch wait.** Faust builds its aiokafka consumer with
  ``fetch_max_wait_ms=1500`` and has no setting for it. On the embedded
  broker a fetch was held that long even when records arrived meanwhile, so
  records reached the agents in bursts about every 750 ms. With 100 ms they
  reach them within 25 ms; on a real cluster it only costs a few more empty
  fetches per second while idle.
- **Records dropped around a rebalance.** Faust may fetch records and drop
  them before they reach an agent, acknowledge them all the same and commit
  past them. :class:`Consumer` acknowledges an input record only once the
  ingest task took it in, and reads a partition again from a hole (see
  :mod:`stream.worker.offset_order`). Related upstream: faust-streaming
  issue 221 (prefetched records out of order after a rebalance).
- **Seek from the wrong thread.** Faust's ``seek`` calls aiokafka from the
  agents' thread while the consumer thread may be draining that partition's
  prefetched records; aiokafka's fetcher then deletes the partition's entry
  twice (``KeyError`` in ``fetched_records``) and the worker crashes
  (:meth:`Consumer.seek_back` seeks in the consumer's thread instead).
- **Duplicate filter after a seek back.** Faust drops a fetched record whose
  offset is below the last one read; after a seek back the records read
  again were dropped too (:class:`ChangelogReadOffsets`).
- **Commit off by one.** Faust commits past the record at the committed
  offset when the one after it is done, and past any first record while it
  revokes (:meth:`Consumer._new_offset`). Upstream: faust-streaming issue
  606 (wrong offset commit with gaps, open), after 312 and 378.
- **A partition that stops moving.** After a broker restart one input
  partition was once left unread while the others went on, with nothing
  logged (:meth:`Consumer.restart_fetch`, driven by
  :mod:`stream.worker.stall`).
- **Records one by one.** Faust hands each fetched record to its agent on its
  own, at about 80 µs per record here, and its ``take`` gathers nothing
  while the agent works. :class:`Consumer` puts the records of the input
  topics in an :class:`~stream.worker.intake.Intake` instead, as it fetches
  them (:meth:`Consumer.getmany`), and tracks them for the commit once taken,
  as Faust's streams do.
- **Table writes outside an agent.** Faust's stores take the partition of a
  write from the current event, and its RocksDB store asserts there is one;
  the checkpointer writes each model's entries in the model's partition,
  outside any event (:func:`store_put`, :func:`store_get`, :func:`store_scan`
  reach the partition's database directly).
- **A table's own store ignored.** ``store="rocksdb://"`` on a table left it
  in memory (:func:`rocksdb_store_url`).
- **A stop signal ignored.** A worker whose agents were stuck ignored
  SIGTERM for an hour (:class:`StopSignalWorker`, used by
  :mod:`stream.worker.run`).
"""

from __future__ import annotations

import inspect
import signal
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from typing import Any

import aiokafka
import faust
from faust.assignor import PartitionAssignor
from faust.stores import rocksdb as faust_rocksdb
from faust.tables.base import Collection
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message

from stream.settings.common import InstallError
from stream.worker.intake import Intake
from stream.worker.offset_order import Hole, PartitionOrder

# The versions this module was written against and the fault tests pass with.
TESTED_FAUST = "0.15.3"
TESTED_AIOKAFKA = "0.14.0"


class FaustIncompatible(InstallError):
    """The installed Faust or aiokafka lacks a private name the worker relies on."""


FETCH_MAX_WAIT_MS = 100


class ConsumerThread(driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, whose aiokafka consumer waits at most ``FETCH_MAX_WAIT_MS`` per fetch."""

    def fetch_state(self, tp: TP) -> str:
        """What aiokafka's public API says of ``tp``'s fetch, without a request to the broker."""
        consumer = self._ensure_consumer()
        try:
            polled = consumer.last_poll_timestamp(tp)
        except aiokafka.errors.IllegalStateError:
            return "not assigned in aiokafka"
        return f"aiokafka paused {tp in consumer.paused()}, last fetch response at {polled} ms"

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by aiokafka when the consumer starts and builds its fetcher.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


def is_changelog(topic: str) -> bool:
    """Whether ``topic`` is a table's changelog (Faust names them so) rather than an input."""
    return topic.endswith("-changelog")


class ChangelogReadOffsets(dict):
    """Faust's last offset read per partition, kept for changelog partitions only.

    Faust drops a fetched record whose offset is below the last one read, as
    a duplicate. After a seek back, records already in flight raise that mark
    again before the records read again arrive, and those were then dropped
    too. Input records read twice are recognised by the model states instead.

    >>> offsets = ChangelogReadOffsets()
    >>> offsets.update({TP("events", 0): 7, TP("app-model-state-changelog", 0): 9})
    >>> offsets[TP("events", 0)], offsets[TP("app-model-state-changelog", 0)]
    (None, 9)
    """

    def __missing__(self, tp: TP) -> None:
        return None

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        if is_changelog(tp.topic):
            super().__setitem__(tp, offset)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for tp, offset in dict(*args, **kwargs).items():
            self[tp] = offset


class Consumer(driver.Consumer):
    """Faust's aiokafka consumer, run by :class:`ConsumerThread`, that can read a partition again from a hole.

    ``order`` learns where each partition is read from; the ingest task
    checks every record against it (see :mod:`stream.worker.offset_order`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order = PartitionOrder()
        self._read_offset = ChangelogReadOffsets()
        # Committed offsets of partitions being revoked: Faust forgets them before its last commit.
        self._revoked_committed: dict[TP, int | None] = {}
        # Input records the ingest task took in (see ack).
        self.taken: weakref.WeakSet[Message] = weakref.WeakSet()
        # Where the records of these topics go instead of Faust's streams (see getmany).
        self.intake: Intake[Message] | None = getattr(self.transport, "intake", None)
        self.intake_topics: frozenset[str] = getattr(self.transport, "intake_topics", frozenset())

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """Faust's fetch, less the records of the intake topics: those go to the intake, in bulk.

        Nothing acknowledges them until the ingest task takes them, so the
        commit cannot pass them meanwhile.
        """
        intake, topics = self.intake, self.intake_topics
        async for tp, message in super().getmany(timeout):
            if intake is None or tp.topic not in topics:
                yield tp, message
            elif intake.put(message, len(message.value or b"")):
                # aiokafka's partition tuple, which Faust's own sets do not take.
                faust_tp = TP(tp.topic, tp.partition)
                if faust_tp not in self._buffered_partitions:
                    self.on_buffer_full(faust_tp)

    async def take_intake(self) -> list[Message]:
        """The records gathered in the intake (see :meth:`Intake.take`), less any from before a rebalance.

        Each is tracked and referenced as a Faust stream does with the events
        it reads: a rebalance or a stop then waits for its acknowledgement.
        """
        assert self.intake is not None
        messages = await self.intake.take()
        if self.intake.below_low_water():
            for tp in [tp for tp in self._buffered_partitions if tp.topic in self.intake_topics]:
                self.on_buffer_drop(tp)
        generation = self.app.consumer_generation_id
        # Faust's watch for stalled streams reads when each partition last had a record processed.
        inbound = self.app.monitor.stream_inbound_time
        now = time.monotonic()
        fresh = []
        for message in messages:
            # One from before a rebalance is read again from the committed offset.
            if message.generation_id == generation:
                message.tracked = True
                self.track_message(message)
                message.incref()
                inbound[message.tp] = now
                fresh.append(message)
        return fresh

    def stop_flow(self) -> None:
        """Stop the flow for a rebalance or a stop: what waits in the intake is read again from the commit."""
        super().stop_flow()
        if self.intake is not None:
            self.intake.clear()
            self._buffered_partitions.difference_update(
                [tp for tp in self._buffered_partitions if tp.topic in self.intake_topics]
            )

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_back(self, tp: TP, offset: int) -> None:
        """Read ``tp`` again from ``offset``; the seek runs in the consumer's thread, as aiokafka needs."""
        await self.seek_wait({tp: offset})

    def fetch_report(self, tp: TP) -> str:
        """Where Faust and aiokafka stand on fetching ``tp``, for the log."""
        return (
            f"high watermark {self.highwater(tp)}, {self._thread.fetch_state(tp)}, "
            f"in Faust's fetch set {tp in self._get_active_partitions()}, paused {tp in self._paused_partitions}, "
            f"buffer full {tp in self._buffered_partitions}"
        )

    async def restart_fetch(self, tp: TP) -> int | None:
        """Fetch ``tp`` again from the next record the ingest task expects; returns that offset.

        A partition Faust took out of its fetch set for a full stream buffer
        is put back: the buffer it waited on has long been drained.
        """
        if tp in self._buffered_partitions and tp not in self._paused_partitions:
            self.on_buffer_drop(tp)
        offset = self.order.expected.get(tp)
        if offset is not None:
            self.order.expect(tp, offset)
            await self.seek_back(tp, offset)
        return offset

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every assigned partition to its committed offset, and expect its records from there."""
        offsets = await super().seek_to_committed()
        for tp, offset in offsets.items():
            if offset is not None and offset >= 0:
                self.order.expect(tp, offset)
        return offsets

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Forget where the revoked partitions were read, then let Faust revoke them."""
        self.order.forget(revoked)
        self._revoked_committed = {tp: self._committed_offset.get(tp) for tp in revoked}
        try:
            await super().on_partitions_revoked(revoked)
        finally:
            self._revoked_committed = {}

    def ack(self, message: Message) -> bool:
        """Count ``message`` as done, for the commit; an input record only if the ingest task took it in.

        Around a rebalance Faust skips some records on their way to the agent
        and acknowledges them all the same: their offsets would be committed,
        and they are read again here from the hole they leave instead.
        """
        if not is_changelog(message.topic) and message not in self.taken:
            message.acked = True
            return False
        return super().ack(message)

    def _new_offset(self, tp: TP) -> int | None:
        # Faust commits past the record at the committed offset when the one after it
        # is done (its test is off by one), and past any first record while it revokes.
        # That record may be held for its model's checkpoint: a crash would lose it.
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if committed is None:
            committed = self._revoked_committed.get(tp)
        if acked and committed is not None and not self._gap.get(tp) and min(acked) > committed:
            return None
        return super()._new_offset(tp)

    async def skip_gap(self, tp: TP, gap: Hole) -> None:
        """Let offsets be committed past ``gap``: the log has no record there (transaction markers)."""
        await self._add_gap(tp, gap.start, gap.end - 1)


class Transport(driver.Transport):
    """Faust's aiokafka transport with :class:`Consumer`: the short fetch wait, holes read again."""

    Consumer = Consumer


def use_worker_transport(
    app: faust.App, intake: Intake[Message] | None = None, topics: frozenset[str] = frozenset()
) -> None:
    """Give ``app`` :class:`Transport`; call it before the app declares any topic.

    The records of ``topics`` go to ``intake`` (see :meth:`Consumer.getmany`).
    """
    app.transport = Transport(app.conf.broker_consumer, app)
    app.transport.intake = intake
    app.transport.intake_topics = topics


def subscribe(app: faust.App, topic: Any) -> None:
    """Have ``app`` consume ``topic`` with no agent iterating it (its records go to an intake)."""
    app.topics.add(topic)


class StopSignalWorker(faust.Worker):
    """Faust's worker that calls :meth:`on_stop_signal` when a stop signal reaches its event loop."""

    def on_stop_signal(self) -> None:
        """Called from Faust's own signal handler, before it schedules the shutdown."""

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        self.on_stop_signal()
        super()._schedule_shutdown(signal)


# What the worker reads of Faust's tables, app and messages. Public in spirit but
# undocumented: a table's in-memory store, the changelog send that returns a
# future, a message's reference count, the assignor's active partitions, and the
# recovery flags.


# RocksDB settings for each of the label join's partition databases; Faust's defaults
# (a 2 GB block cache and three 64 MB write buffers, per partition) are sized for a
# machine of its own.
JOIN_ROCKSDB_OPTIONS = {
    "driver": "rocksdict",
    "write_buffer_size": 4 << 20,
    "max_write_buffer_number": 2,
    "block_cache_size": 8 << 20,
    "bloom_filter_size": 10,
}


def rocksdb_store_url(table_name: str) -> str:
    """The store URL that puts one table on RocksDB, under Faust's table folder.

    Faust takes a table's own store only when its URL is true, and yarl's
    ``URL("rocksdb://")``, the form Faust documents, is false: the table
    stayed in memory without a word.
    """
    return f"rocksdb:{table_name}"


def _rocksdb(table: Any) -> Any:
    """The table's Faust RocksDB store, or None for an in-memory one."""
    store = table.data
    return store if isinstance(store, faust_rocksdb.Store) else None


def store_get(table: Any, partition: int, key: bytes) -> bytes | None:
    """The value of ``key`` in the table's local store (in ``partition``'s database, for RocksDB), or None."""
    rocks = _rocksdb(table)
    if rocks is not None:
        return rocks._db_for_partition(partition).get(key)
    store = table.data
    # Faust's in-memory store.get raises and catches KeyError inside on a miss (0.58 against 0.12 µs here).
    return store[key] if key in store else None  # noqa: SIM401


def store_put(table: Any, partition: int, key: bytes, value: bytes | None) -> None:
    """Set (or, with ``value`` None, delete) ``key`` in the table's local store, in ``partition``."""
    rocks = _rocksdb(table)
    if rocks is None:
        if value is None:
            table.data.pop(key, None)
        else:
            table.data[key] = value
    elif value is None:
        rocks._db_for_partition(partition).delete(key)
    else:
        rocks._db_for_partition(partition).put(key, value)


def store_scan(table: Any, partitions: set[int] | None = None) -> Iterator[tuple[bytes, bytes]]:
    """The table's local entries as (key, value), those of ``partitions`` only for RocksDB (default: all open).

    RocksDB iterates each partition's database in key order from a snapshot
    of it; the in-memory store from a snapshot of its keys.
    """
    rocks = _rocksdb(table)
    if rocks is None:
        store = table.data
        for key in list(store.keys()):
            value = store.get(key)
            if value is not None:
                yield key, value
        return
    for partition, db in list(rocks._dbs.items()):
        if partitions is None or partition in partitions:
            for key, value in db.items():
                if key != rocks.offset_key:
                    yield key, value


def send_changelog(table: Any, partition: int, key: bytes, value: Any) -> Awaitable[Any]:
    """Send one changelog record of ``table`` to ``partition``; the future resolves once the broker has it."""
    return table.send_changelog(partition, key, value)


def hold_message(message: Message) -> None:
    """Keep Faust from committing ``message``'s offset until its record is acknowledged once more."""
    message.incref()


def active_partitions(app: faust.App, topic: str) -> set[int]:
    """The partitions of ``topic`` this worker actively owns (standby copies excluded)."""
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}


def tables_ready(app: faust.App) -> bool:
    """Partitions assigned and table recovery done."""
    recovery = app.tables.recovery
    return bool(app.consumer and recovery.completed.is_set() and not recovery.in_recovery and not app.rebalancing)


def _instance_attributes(cls: type) -> str:
    return inspect.getsource(cls.__init__)


def check_faust() -> None:
    """Stop with one line naming the installed versions if a private name this module needs has changed."""
    consumer_init = _instance_attributes(FaustConsumer)
    checks = [
        (
            "AIOKafkaConsumerThread._create_worker_consumer(transport)",
            _params(driver.AIOKafkaConsumerThread, "_create_worker_consumer") == ["self", "transport"],
        ),
        ("Consumer._new_consumer_thread()", _params(driver.Consumer, "_new_consumer_thread") == ["self"]),
        ("Consumer._new_offset(tp)", _params(FaustConsumer, "_new_offset") == ["self", "tp"]),
        (
            "Consumer._add_gap as a coroutine(tp, offset_from, offset_to)",
            inspect.iscoroutinefunction(getattr(FaustConsumer, "_add_gap", None))
            and _params(FaustConsumer, "_add_gap") == ["self", "tp", "offset_from", "offset_to"],
        ),
        *(
            (f"Consumer.{name} set in __init__", f"self.{name} =" in consumer_init or f"self.{name}:" in consumer_init)
            for name in ("_read_offset", "_committed_offset", "_acked", "_gap")
        ),
        (
            "Consumer.getmany(timeout) yielding (tp, message), track_message(message) and stop_flow()",
            inspect.isasyncgenfunction(getattr(FaustConsumer, "getmany", None))
            and _params(FaustConsumer, "getmany") == ["self", "timeout"]
            and _params(FaustConsumer, "track_message") == ["self", "message"]
            and _params(FaustConsumer, "stop_flow") == ["self"],
        ),
        (
            "Message.tracked and generation_id",
            all(name in inspect.getsource(Message.__init__) for name in ("self.tracked", "self.generation_id")),
        ),
        (
            "Monitor.stream_inbound_time",
            "self.stream_inbound_time" in inspect.getsource(faust.Monitor.__init__),
        ),
        (
            "Consumer._paused_partitions and _buffered_partitions set in _reset_state",
            all(
                f"self.{name} =" in inspect.getsource(FaustConsumer._reset_state)
                for name in ("_paused_partitions", "_buffered_partitions")
            ),
        ),
        (
            "AIOKafkaConsumer._fetch_max_wait_ms",
            "self._fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.__init__),
        ),
        (
            "Consumer.seek_wait(partitions) run in the consumer thread",
            inspect.iscoroutinefunction(getattr(driver.Consumer, "seek_wait", None))
            and "call_thread" in inspect.getsource(driver.AIOKafkaConsumerThread.seek_wait),
        ),
        (
            "Consumer._get_active_partitions(), on_buffer_full(tp) and on_buffer_drop(tp)",
            _params(FaustConsumer, "_get_active_partitions") == ["self"]
            and _params(FaustConsumer, "on_buffer_full") == ["self", "tp"]
            and _params(FaustConsumer, "on_buffer_drop") == ["self", "tp"],
        ),
        ("Worker._schedule_shutdown(signal)", _params(faust.Worker, "_schedule_shutdown") == ["self", "signal"]),
        (
            "Collection.send_changelog(partition, key, value)",
            _params(Collection, "send_changelog")[:4] == ["self", "partition", "key", "value"],
        ),
        ("Collection.data", isinstance(inspect.getattr_static(Collection, "data", None), property)),
        ("Message.incref", callable(getattr(Message, "incref", None))),
        ("PartitionAssignor.assigned_actives", callable(getattr(PartitionAssignor, "assigned_actives", None))),
        (
            "Recovery.completed and in_recovery",
            "self.completed" in inspect.getsource(Recovery.__init__) and hasattr(Recovery, "in_recovery"),
        ),
        ("App.rebalancing", hasattr(faust.App, "rebalancing")),
        (
            "rocksdb.Store._db_for_partition(partition), _dbs and offset_key, with rocksdict",
            _params(faust_rocksdb.Store, "_db_for_partition") == ["self", "partition"]
            and "self._dbs =" in _instance_attributes(faust_rocksdb.Store)
            and isinstance(getattr(faust_rocksdb.Store, "offset_key", None), bytes)
            and faust_rocksdb.USE_ROCKSDICT,
        ),
    ]
    missing = [name for name, ok in checks if not ok]
    if missing:
        raise FaustIncompatible(
            f"faust-streaming {faust.__version__} with aiokafka {aiokafka.__version__} lacks what the worker relies on "
            f"({'; '.join(missing)}); install the tested versions: "
            f"faust-streaming=={TESTED_FAUST}, aiokafka=={TESTED_AIOKAFKA}"
        )


def _params(cls: type, name: str) -> list[str]:
    function = getattr(cls, name, None)
    if function is None:
        return []
    return list(inspect.signature(function).parameters)


check_faust()

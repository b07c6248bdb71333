"""The worker's Faust consumer and transport: a short fetch wait, input records into the intake in bulk,
partitions read again from a hole, and commits that never pass a record not yet taken in.

The reasons, with the upstream issues, are in :mod:`stream.worker.faust_compat`.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiokafka
import faust
from aiokafka.errors import KafkaError
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message
from faust.types.tuples import ConsumerMessage, ack_lock
from mode.utils.futures import notify

from stream.worker.intake import Intake
from stream.worker.offset_order import Hole, PartitionOrder

FETCH_MAX_WAIT_MS = 100

# How much one look past a partition's reported end may read, and how many looks at most.
PROBE_BYTES = 1 << 20
PROBE_ROUNDS = 20
PROBE_WAIT_MS = 100

log = logging.getLogger(__name__)


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

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        """Faust's end offsets for table recovery, moved past the records the broker holds beyond them."""
        ends = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return ends
        return await stored_ends(self._ensure_consumer(), ends)


async def stored_ends(consumer: aiokafka.AIOKafkaConsumer, ends: Mapping[TP, int]) -> dict[TP, int]:
    """``ends``, each partition's end offset as ListOffsets gave it, moved past any record the broker holds beyond.

    Tansu on S3 answers ListOffsets with the offset after the batch object
    written last by its modification time, which S3 keeps to the second:
    when a partition's last two batches were written in the same second, the
    answer was the offset of the last one instead of the offset after it.
    Faust's recovery reads a changelog partition up to that end and stops,
    so a worker restored a model from the state before its last while the
    committed input offsets were past both. A fetch from the reported end
    returns what lies beyond it (on Kafka, nothing); the end is moved past
    the last record fetched. Only records that exist move it: Tansu's own
    high watermark also counts offsets reserved by a write it never
    finished, and a recovery waiting for those would never end.
    """
    client = consumer._client
    found = dict(ends)
    looking = dict(ends)
    for _ in range(PROBE_ROUNDS):
        further: dict[TP, int] = {}
        for node, request in _probes(client, looking):
            try:
                response = await client.send(node, request)
            except KafkaError as exc:
                log.warning(
                    "could not look past the end offsets ListOffsets gave on broker %s (%r); using them", node, exc
                )
                continue
            for topic, partitions in response.topics:
                for partition, error_code, _highwater, *data in partitions:
                    tp = TP(topic, partition)
                    end = _records_end(data[-1]) if error_code == 0 and tp in found else None
                    if end is not None and end > found[tp]:
                        found[tp] = further[tp] = end
        if not further:
            break
        looking = further
    moved = {tp: (ends[tp], end) for tp, end in found.items() if end != ends[tp]}
    if moved:
        log.info("records lie past the end offsets ListOffsets gave; reading to them (listed, found): %s", moved)
    return found


def _probes(client: Any, ends: Mapping[TP, int]) -> Iterable[tuple[int, FetchRequest]]:
    by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = defaultdict(lambda: defaultdict(list))
    for tp, end in ends.items():
        node = client.cluster.leader_for_partition(tp)
        if node is not None and node >= 0:
            by_node[node][tp.topic].append((tp.partition, end, PROBE_BYTES))
    for node, topics in by_node.items():
        # No minimum, so Kafka answers at once; Tansu answered a fetch allowed no wait at all with no topics.
        yield node, FetchRequest(PROBE_WAIT_MS, 0, PROBE_BYTES, 0, list(topics.items()))


def _records_end(message_set: bytes | None) -> int | None:
    """The offset after the last whole batch in a fetch response's records, None if it holds none."""
    if not message_set:
        return None
    records = MemoryRecords(message_set)
    end = None
    while (batch := records.next_batch()) is not None:
        end = batch.next_offset
    return end


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


@dataclass(slots=True)
class FetchedRecord:
    """A record from the intake with what the worker reads of a Faust event: key, value, message, ack().

    The consumer took one reference to the message for the intake (see
    ``Consumer.take_intake``); a record held for a checkpoint keeps that
    one, instead of taking another and giving the first back at once.
    """

    message: Any
    consumer: Any
    # Whether the intake's reference to the message is still this record's to give back.
    intake_reference: bool = True

    @property
    def key(self) -> bytes | None:
        return self.message.key

    @property
    def value(self) -> bytes | None:
        return self.message.value

    def keep(self) -> None:
        """Keep Faust from committing the message until the next :meth:`ack`."""
        if self.intake_reference:
            self.intake_reference = False
        else:
            self.message.incref()

    def give_back(self) -> None:
        """The intake's reference, given back unless :meth:`keep` took it over."""
        if self.intake_reference:
            self.intake_reference = False
            self.ack()

    def ack(self) -> bool:
        """Give back one reference to the message: its offset is committed once none is left."""
        return self.message.ack(self.consumer)

    @staticmethod
    def ack_all(records: Iterable[FetchedRecord]) -> None:
        """:meth:`ack` for each of ``records``, in order, a consumer's at a time (see :meth:`Consumer.ack_all`)."""
        by_consumer: dict[int, tuple[Any, list[Message]]] = {}
        for record in records:
            by_consumer.setdefault(id(record.consumer), (record.consumer, []))[1].append(record.message)
        for consumer, messages in by_consumer.values():
            consumer.ack_all(messages)


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
        # Where the records of these topics go instead of Faust's streams (see _wait_next_records).
        self.intake: Intake[Message] | None = getattr(self.transport, "intake", None)
        self.intake_topics: frozenset[str] = getattr(self.transport, "intake_topics", frozenset())

    async def _wait_next_records(self, timeout: float) -> tuple[Mapping[Any, list[Any]] | None, set[TP] | None]:
        """Faust's fetch, less the records of the intake topics: those go to the intake, a partition's at a time.

        Faust's ``getmany`` turns each fetched record into a message and
        yields it, one at a time, through its generator and the worker's;
        here the intake's records are turned into messages in one pass per
        partition, on the conditions ``getmany`` checks (the flow active,
        the partition fetched or buffered), and Faust yields the rest.
        Nothing acknowledges them until the ingest task takes them, so the
        commit cannot pass them meanwhile.
        """
        records, active = await super()._wait_next_records(timeout)
        intake, topics = self.intake, self.intake_topics
        if intake is None or not records or self.should_stop or not self.flow_active:
            return records, active
        rest = {}
        for tp, fetched in records.items():
            if tp.topic not in topics:
                rest[tp] = fetched
            elif active is None or tp in active or tp in self._buffered_partitions:
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                messages = [self._to_message(tp, record) for record in fetched]
                if intake.put_all(messages, [len(message.value or b"") for message in messages]):
                    # aiokafka's partition tuple, which Faust's own sets do not take.
                    faust_tp = TP(tp.topic, tp.partition)
                    if faust_tp not in self._buffered_partitions:
                        self.on_buffer_full(faust_tp)
        return rest, active

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

    def held_back(self) -> set[TP]:
        """Input partitions out of the fetch because the intake is full, while it is: the ingest is behind.

        They read nothing until the ingest takes enough, which one long batch
        (a thousand models' checkpoints) can put off past the stall watch's
        limit; they are not stalled.
        """
        if self.intake is None or self.intake.below_low_water():
            return set()
        return {tp for tp in self._buffered_partitions if tp.topic in self.intake_topics}

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

    def ack_all(self, messages: Iterable[Message]) -> None:
        """``message.ack(self)`` for each of ``messages``, in order, in one pass under Faust's ``ack_lock``.

        Faust's ``Message.ack``, ``decref``, ``on_final_ack`` and :meth:`ack` inlined (``checks.py`` holds
        Faust's code to the version copied): four calls, each taking the lock, per record before.
        """
        taken, committed_offsets = self.taken, self._committed_offset
        acked_offsets, acked_indexes, unacked = self._acked, self._acked_index, self._unacked_messages
        acking_topics: dict[str, bool] = {}
        counted = 0
        notified = False
        with ack_lock:
            for message in messages:
                if type(message) is not ConsumerMessage:
                    message.ack(self)
                    continue
                if message.acked:
                    continue
                message.refcount = refcount = max(message.refcount - 1, 0)
                if refcount:
                    continue
                message.acked = True
                topic = message.topic
                if not is_changelog(topic) and message not in taken:
                    continue
                acking = acking_topics.get(topic)
                if acking is None:
                    acking = acking_topics[topic] = self.app.topics.acks_enabled_for(topic)
                if not acking:
                    continue
                notified = True
                tp, offset = message.tp, message.offset
                committed = committed_offsets[tp]
                if committed is None or offset >= committed:
                    acked_index = acked_indexes[tp]
                    if offset not in acked_index:
                        unacked.discard(message)
                        acked_index.add(offset)
                        acked_offsets[tp].append(offset)
                        counted += 1
            self._n_acked += counted
            if notified:
                notify(self._waiting_for_ack)

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

    The records of ``topics`` go to ``intake`` (see :meth:`Consumer._wait_next_records`).
    """
    app.transport = Transport(app.conf.broker_consumer, app)
    app.transport.intake = intake
    app.transport.intake_topics = topics


def subscribe(app: faust.App, topic: Any) -> None:
    """Have ``app`` consume ``topic`` with no agent iterating it (its records go to an intake)."""
    app.topics.add(topic)

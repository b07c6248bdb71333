"""Faust's Kafka transport: a short fetch wait, and reading a partition again from a hole.

Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and has no
setting for it. On the embedded broker a fetch was held about that long even
when records arrived meanwhile: records reached the ingest agent in bursts
every ~750 ms, and an alert came 0.3 to 1.6 s after its event on an idle
worker. With 100 ms they reach it within 25 ms. On a real Kafka cluster a
shorter wait only means a few more empty fetches per second while idle.

Around a rebalance Faust may fetch records and drop them before they reach
an agent; the ingest agent seeks the partition back there
(see :mod:`stream.sequence`).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message

from stream.sequence import Hole, PartitionOrder

FETCH_MAX_WAIT_MS = 100


class ConsumerThread(driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, whose aiokafka consumer waits at most ``FETCH_MAX_WAIT_MS`` per fetch."""

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

    ``order`` learns where each partition is read from; the ingest agent
    checks every record against it (see :mod:`stream.sequence`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order = PartitionOrder()
        self._read_offset = ChangelogReadOffsets()
        # Committed offsets of partitions being revoked: Faust forgets them before its last commit.
        self._revoked_committed: dict[TP, int | None] = {}
        # Input records the ingest agent took in (see ack).
        self.taken: weakref.WeakSet[Message] = weakref.WeakSet()

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

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
        """Count ``message`` as done, for the commit; an input record only if the ingest agent took it in.

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


def use_worker_transport(app: faust.App) -> None:
    """Give ``app`` :class:`Transport`; call it before the app declares any topic."""
    app.transport = Transport(app.conf.broker_consumer, app)

"""Changelog writes to a partition the caller names, each remembered until the broker confirms it.

A checkpoint may release the records its states cover only once those
writes are stored; see :mod:`stream.worker.checkpoint`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from stream.worker.faust_compat import send_changelog, store_put

# Changelog writes a worker may have queued and not yet confirmed before it waits.
UNCONFIRMED_LIMIT = 2_000


class ChangelogWrites:
    """Table entries written in a partition the caller names, each remembered until the broker confirms it.

    Faust's ``table[key] = value`` takes the partition from the current event
    and queues the changelog record with no way to wait for it. A checkpoint
    must know its writes are stored before the offsets they cover may be
    committed: :meth:`confirm` waits for that.

    >>> class Table:  # what this class uses of a Faust table
    ...     data = {}
    ...     def send_changelog(self, partition, key, value):
    ...         sent = asyncio.get_event_loop().create_future()
    ...         sent.set_result((partition, key, value))
    ...         return sent
    >>> async def write_two():
    ...     writes = ChangelogWrites()
    ...     writes.write(Table(), 3, b"a", b"1")
    ...     writes.write(Table(), 3, b"b", None)
    ...     return await writes.confirm()
    >>> asyncio.run(write_two()), Table.data
    (2, {b'a': b'1'})

    A write ``when_stored`` reaches the store once the broker has it:

    >>> class Unstored(Table):  # the broker stores a record once told to
    ...     def send_changelog(self, partition, key, value):
    ...         self.broker = asyncio.get_event_loop().create_future()
    ...         return self.broker
    >>> async def write_when_stored():
    ...     joins, writes = Unstored(), ChangelogWrites()
    ...     writes.write(joins, 3, b"c", b"2", when_stored=True)
    ...     before = b"c" in Table.data
    ...     joins.broker.set_result(None)
    ...     await writes.confirm()
    ...     return before, Table.data[b"c"]
    >>> asyncio.run(write_when_stored())
    (False, b'2')
    """

    def __init__(self) -> None:
        self.unconfirmed: list[asyncio.Future[Any]] = []

    def write(
        self,
        table: Any,
        partition: int,
        key: bytes,
        value: Any,
        when_stored: bool = False,
        stored_as: list[tuple[bytes, bytes | None]] | None = None,
        still_owned: Callable[[], bool] | None = None,
    ) -> None:
        """Set (or, with ``value`` None, delete) ``key`` in ``table`` and send it to changelog ``partition``.

        ``when_stored``: the table's local store takes the write only once the
        broker has it. A store that outlives the worker (RocksDB) must not hold
        what its changelog lacks: another worker taking the partition over reads
        only the changelog, and this one, restarted, trusts its store up to the
        last offset the broker confirmed. Until then the writer keeps what it
        wrote (the join entries stay in the model's state).

        ``stored_as``: what the store takes instead of ``key`` and ``value``,
        for a record that stands for several entries (see
        :class:`~stream.worker.faust_compat.ExpandingTable`).

        ``still_owned``: asked once the broker has a ``when_stored`` write; if
        False (the partition was revoked meanwhile), the store is left as it
        is. The next assignment read the store and the changelog without this
        write: taken in afterwards, it would replace a state the worker has
        gone on changing since.
        """
        sent = send_changelog(table, partition, key, value)
        entries = [(key, value)] if stored_as is None else stored_as
        if when_stored:
            sent.add_done_callback(lambda done: _stored(done, table, partition, entries, still_owned))
        else:
            _store(table, partition, entries)
        self.unconfirmed.append(sent)

    async def ebb(self, limit: int = UNCONFIRMED_LIMIT) -> None:
        """Wait while more than ``limit`` writes are pending; a failed one stays for :meth:`confirm` to raise.

        Faust queues changelog records in an unbounded buffer and sends them
        one at a time. A worker that writes faster than that (a join entry per
        prediction, and on Tansu one record per produce request) held 80,000
        of them and grew past a gigabyte; waiting here keeps the backlog, and
        the memory, bounded.

        >>> async def backlog():
        ...     loop = asyncio.get_running_loop()
        ...     writes = ChangelogWrites()
        ...     writes.unconfirmed = [loop.create_future() for _ in range(5)]
        ...     for sent in writes.unconfirmed:
        ...         loop.call_later(0.01, sent.set_result, None)
        ...     await writes.ebb(limit=2)
        ...     return len(writes.unconfirmed)
        >>> asyncio.run(backlog()) <= 2
        True
        """
        if len(self.unconfirmed) <= limit:
            return  # the common case: nothing to scan
        while True:
            pending = [sent for sent in self.unconfirmed if not sent.done()]
            if len(pending) <= limit:
                break
            await asyncio.wait(pending[: len(pending) - limit])
        self.unconfirmed = [s for s in self.unconfirmed if not s.done() or s.cancelled() or s.exception()]

    async def confirm(self) -> int:
        """Wait until the broker has stored every write so far; raise the first failure. Returns how many."""
        # They stay in the list while awaited, so that :meth:`ebb` counts them meanwhile.
        pending = list(self.unconfirmed)
        results = await asyncio.gather(*pending, return_exceptions=True)
        awaited = set(pending)
        self.unconfirmed = [sent for sent in self.unconfirmed if sent not in awaited]
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(results)


def _stored(
    sent: asyncio.Future[Any],
    table: Any,
    partition: int,
    entries: list[tuple[bytes, Any]],
    still_owned: Callable[[], bool] | None,
) -> None:
    if sent.cancelled() or sent.exception() is not None:
        return
    if still_owned is None or still_owned():
        _store(table, partition, entries)


def _store(table: Any, partition: int, entries: list[tuple[bytes, Any]]) -> None:
    for key, value in entries:
        store_put(table, partition, key, value)

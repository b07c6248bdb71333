"""Changelog writes to a partition the caller names, each remembered until the broker confirms it.

A checkpoint may release the records its states cover only once those
writes are stored; see :mod:`stream.worker.checkpoint`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from stream.worker.faust_compat import send_changelog, table_store

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
    """

    def __init__(self) -> None:
        self.unconfirmed: list[asyncio.Future[Any]] = []

    def write(self, table: Any, partition: int, key: bytes, value: Any) -> None:
        """Set (or, with ``value`` None, delete) ``key`` in ``table`` and send it to changelog ``partition``."""
        store = table_store(table)
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value
        self.unconfirmed.append(send_changelog(table, partition, key, value))

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

"""Input records taken in bulk, as the consumer fetched them, instead of one by one through a Faust stream.

Faust hands each fetched record to its agents on its own: a task pair per
record to wait on it, a channel queue, an event object, a stream step. That
cost about 80 µs per record here, and its ``take`` collected nothing while
the agent worked, so one-event records came in batches of a couple of
hundred, a few events per model. The worker's consumer instead puts the
records of the input topics in an :class:`Intake` as it fetches them (see
:class:`stream.worker.faust_compat.Consumer`), and the ingest task takes
whatever has gathered, up to ``max_records`` or ``max_bytes``: the longer
the last batch took, the bigger the next.

An intake holding four takes' worth of bytes, or two of records, tells the
consumer to stop fetching its partitions until it is half empty again, as a
full Faust stream buffer would.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


# How many takes' worth the intake holds before its partitions stop being fetched: by bytes,
# and by records, which cost about 330 bytes each besides their value (Faust's message object).
HIGH_WATER_TAKES = 4
HIGH_WATER_RECORD_TAKES = 2


class Intake(Generic[T]):
    """Records waiting for the ingest task, oldest first, each with its size in bytes.

    ``wait_s``: once a record is here, how long :meth:`take` waits for more
    to make up a full take.

    >>> async def demo():
    ...     intake = Intake(max_records=2, max_bytes=100, wait_s=0.01)
    ...     full = [intake.put(n, size=10) for n in range(9)]
    ...     takes = [await intake.take() for _ in range(4)]
    ...     return full, takes, intake.below_low_water()
    >>> asyncio.run(demo())
    ([False, False, False, True, True, True, True, True, True], [[0, 1], [2, 3], [4, 5], [6, 7]], True)
    """

    def __init__(
        self, max_records: int, max_bytes: int, wait_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_records < 1 or max_bytes < 1:
            raise ValueError("max_records and max_bytes must be at least 1")
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.wait_s = wait_s
        self.clock = clock
        self._high_water = (HIGH_WATER_RECORD_TAKES * max_records, HIGH_WATER_TAKES * max_bytes)
        self._records: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._arrived = asyncio.Event()

    def __len__(self) -> int:
        return len(self._records)

    def _full_take(self) -> bool:
        return len(self._records) >= self.max_records or self._bytes >= self.max_bytes

    def put(self, record: T, size: int) -> bool:
        """Add ``record`` of ``size`` bytes; returns whether its partition should stop being fetched."""
        return self.put_all([record], [size])

    def put_all(self, records: list[T], sizes: list[int]) -> bool:
        """Add ``records``, of these sizes in bytes; returns whether their partition should stop being fetched."""
        was_empty = not self._records
        self._records.extend(zip(records, sizes, strict=True))
        self._bytes += sum(sizes)
        if records and (was_empty or self._full_take()):
            self._arrived.set()
        records, size = self._high_water
        return len(self._records) >= records or self._bytes >= size

    def below_low_water(self) -> bool:
        """Whether partitions stopped for a full intake may be fetched again."""
        records, size = self._high_water
        return len(self._records) <= records // 2 and self._bytes <= size // 2

    async def take(self) -> list[T]:
        """The oldest records, a full take at most, once there is one and more had ``wait_s`` to come.

        A full take is ``max_records`` records or ``max_bytes`` bytes, whichever
        comes first; a single bigger record makes one alone.
        """
        while not self._records:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self.clock() + self.wait_s
        while not self._full_take():
            left = deadline - self.clock()
            if left <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                break
        taken: list[T] = []
        size = 0
        records = self._records
        while records and len(taken) < self.max_records and (not taken or size + records[0][1] <= self.max_bytes):
            record, n = records.popleft()
            taken.append(record)
            size += n
        self._bytes -= size
        return taken

    def clear(self) -> list[T]:
        """Every record waiting, removed (the partitions are read again from their committed offsets)."""
        records = [record for record, _ in self._records]
        self._records.clear()
        self._bytes = 0
        return records

    def waiting(self) -> list[T]:
        """The records waiting, oldest first, left in place.

        >>> intake = Intake(max_records=1, max_bytes=100, wait_s=0.0)
        >>> _ = intake.put("a", 1), intake.put("b", 1)
        >>> _ = asyncio.run(intake.take())
        >>> intake.waiting()
        ['b']
        """
        return [record for record, _ in self._records]

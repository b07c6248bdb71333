"""Input records in offset order, without holes: what Faust's consumer may drop around a rebalance.

Around a rebalance Faust's consumer can fetch records and drop them before
they reach the agent, while it pauses and resumes its flow. It then takes
the hole for offsets the log never had (as after compaction or transaction
markers), commits past it, and the events are lost. So the ingest task
checks each partition's offsets against the next one expected. At a hole it
drops the record that showed it and everything after, and the partition is
read again from the hole. The first record from there tells a dropped
record (it comes again) from offsets the log never had (the record after
them comes first, in three reads that agree). Should the record at the hole
be dropped again, the partition is read again once what was in flight at
the seek has had time to arrive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from enum import Enum


class Order(Enum):
    """What to do with a record, given the offsets of its partition seen before it."""

    APPLY = "apply"
    # Read before (Faust sought back): apply it, the states skip what they hold; its rejects are out already.
    APPLY_AGAIN = "apply_again"
    # After a hole, before the partition is read again from it: the record comes again.
    DROP = "drop"
    # The record that shows a hole: drop it, and read the partition again from the hole.
    REFETCH = "refetch"
    # Apply it: read again three times, the log had no record in the hole (see ``PartitionOrder.gaps``).
    APPLY_AFTER_GAP = "apply_after_gap"


# Reads of a hole that must agree before it is taken for offsets the log never had.
READS_TO_CONFIRM_GAP = 3
# After a seek back, records past the hole arrive for a few milliseconds (they were in
# flight). Past this, one means the record at the hole was dropped again.
REFETCH_AGAIN_S = 1.0


@dataclass(slots=True)
class Hole:
    """Offsets ``start`` up to ``end`` (excluded) never reached the worker; ``end`` did.

    ``reads`` counts the reads from ``start`` in a row whose first record was ``end``.
    """

    start: int
    end: int
    reads: int = 0
    # When the partition was last sought back to the hole.
    since: float = field(default=0.0, compare=False, repr=False)


class PartitionOrder:
    """Per partition, the next offset expected, and the hole being read again.

    >>> order = PartitionOrder()
    >>> order.expect("p0", 10)
    >>> [order.check("p0", offset).value for offset in (10, 11, 14, 15)]
    ['apply', 'apply', 'refetch', 'drop']
    >>> order.holes["p0"]
    Hole(start=12, end=14, reads=0)

    Read again from 12, the dropped records come first:

    >>> [order.check("p0", offset).value for offset in (12, 13, 14, 15)]
    ['apply', 'apply', 'apply', 'apply']

    A hole the log really has (offsets 3 and 4 never existed): read again
    from 3, three times, the record at 5 comes first each time.

    >>> order.expect("p1", 2)
    >>> [order.check("p1", offset).value for offset in (2, 5, 6, 5, 6, 5, 6, 5, 6)]
    ['apply', 'refetch', 'drop', 'refetch', 'drop', 'refetch', 'drop', 'apply_after_gap', 'apply']
    >>> order.gaps["p1"]
    Hole(start=3, end=5, reads=3)
    """

    def __init__(self, refetch_again_s: float = REFETCH_AGAIN_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.refetch_again_s = refetch_again_s
        self.clock = clock
        self.expected: dict[Hashable, int] = {}
        self.holes: dict[Hashable, Hole] = {}
        # The last hole per partition found to be offsets the log never had.
        self.gaps: dict[Hashable, Hole] = {}

    def expect(self, partition: Hashable, offset: int) -> None:
        """The partition is read from ``offset`` on (it was just sought there)."""
        self.expected[partition] = offset
        self.holes.pop(partition, None)

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """The partitions are no longer read here (revoked)."""
        for partition in partitions:
            self.expected.pop(partition, None)
            self.holes.pop(partition, None)

    def check(self, partition: Hashable, offset: int) -> Order:
        """What to do with the record at ``offset`` of ``partition``; a REFETCH leaves the hole in ``holes``."""
        expected = self.expected.get(partition)
        hole = self.holes.get(partition)
        if hole is not None:
            if offset > hole.end:
                if self.clock() - hole.since < self.refetch_again_s:
                    return Order.DROP
                hole.since = self.clock()
                return Order.REFETCH
            if offset < hole.start:
                return Order.APPLY_AGAIN
            if offset == hole.start:
                del self.holes[partition]
                self.expected[partition] = offset + 1
                return Order.APPLY
            # Read again from the hole, the first record is past its start.
            hole.reads = hole.reads + 1 if offset == hole.end else 1
            hole.end = offset
            if hole.reads < READS_TO_CONFIRM_GAP:
                hole.since = self.clock()
                return Order.REFETCH
            self.gaps[partition] = self.holes.pop(partition)
            self.expected[partition] = offset + 1
            return Order.APPLY_AFTER_GAP
        if expected is None or offset == expected:
            self.expected[partition] = offset + 1
            return Order.APPLY
        if offset < expected:
            return Order.APPLY_AGAIN
        self.holes[partition] = Hole(expected, offset, since=self.clock())
        return Order.REFETCH

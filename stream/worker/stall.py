"""Input partitions that stopped moving while records wait in them.

After a broker restart a consumer can stop fetching one partition while it
goes on with the others, heartbeats and reports itself healthy (quix-streams
issue 1124 describes the same with librdkafka; Faust's own "stream stopped
processing" warning waits 300 s). The worker checks each input partition it
owns: behind its high watermark, and its read offset unchanged for
``stall_s``, it is stalled, and its fetch is started again from the next
record expected (see :meth:`stream.worker.faust_compat.Consumer.restart_fetch`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

# An agent with a backlog reads every partition it owns within seconds; a full checkpoint
# of thousands of models takes a few. Thirty seconds is past both.
STALL_S = 30.0


@dataclass(slots=True)
class _Progress:
    read: int | None
    since: float
    reported: bool = False


class StallWatch:
    """Which partitions have been behind without progress for ``stall_s`` seconds.

    ``stall_s``
        How long a partition with records waiting may read none before it
        is taken for stalled. A busy agent still reads every partition it
        owns within seconds; only a fetch that stopped stays this long.

    >>> clock = [0.0]
    >>> watch = StallWatch(stall_s=30, clock=lambda: clock[0])
    >>> watch.stalled([("p0", 10, 5), ("p1", 20, 0)])
    []
    >>> clock[0] = 31.0
    >>> watch.stalled([("p0", 10, 5), ("p1", 20, 0)])  # p1 is behind nothing
    ['p0']

    Reported once per read offset: a partition whose last offsets are
    transaction markers stays one record "behind" for good.

    >>> clock[0] = 90.0
    >>> watch.stalled([("p0", 10, 5)])
    []
    >>> watch.stalled([("p0", 12, 3)])  # it moved
    []
    >>> clock[0] = 125.0
    >>> watch.stalled([("p0", 12, 3)])
    ['p0']
    """

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if stall_s <= 0:
            raise ValueError(f"stall_s must be positive, got {stall_s}")
        self.stall_s = stall_s
        self.clock = clock
        self._progress: dict[Hashable, _Progress] = {}

    def stalled(self, partitions: Iterable[tuple[Hashable, int | None, int]]) -> list[Hashable]:
        """Of ``(partition, read offset, lag)`` for every partition owned, those newly stalled."""
        now = self.clock()
        seen = {}
        out = []
        for partition, read, lag in partitions:
            progress = self._progress.get(partition)
            if progress is None or progress.read != read or lag <= 0:
                progress = _Progress(read, now)
            elif not progress.reported and now - progress.since >= self.stall_s:
                out.append(partition)
                progress.reported = True
            seen[partition] = progress
        # Partitions no longer owned are forgotten: owned again, they start afresh.
        self._progress = seen
        return out

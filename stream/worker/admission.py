"""Which fetched records the worker applies: those of partitions it owns, in offset order, without holes.

Records fetched before a rebalance may reach the agent after it: those of
partitions now owned by another worker are its to apply, from its own
state. At a hole in a partition's offsets (records Faust dropped, see
:mod:`stream.worker.offset_order`) the partition is read again from the hole.
The consumer never commits the records left out (they are not ``taken``):
they will come again, here or to the next owner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from stream.worker.faust_compat import Consumer
from stream.worker.offset_order import Order

log = logging.getLogger(__name__)

APPLIED = (Order.APPLY, Order.APPLY_AGAIN, Order.APPLY_AFTER_GAP)


class Admission:
    """Checks each record against its partition's expected offset on the worker's :class:`Consumer`.

    ``on_refetch`` is called once per partition read again from a hole.
    """

    def __init__(self, consumer: Callable[[], Any], on_refetch: Callable[[], None] = lambda: None) -> None:
        self.consumer = consumer
        self.on_refetch = on_refetch

    async def admit(self, records: list[Any]) -> list[tuple[Any, bool]]:
        """The records to apply, each with whether it is read for the first time."""
        consumer = self.consumer()
        if not isinstance(consumer, Consumer):
            raise TypeError(
                f"the worker's consumer is {type(consumer).__name__}, not the one of "
                "stream.worker.faust_compat: call use_worker_transport(app) before declaring topics"
            )
        owned = consumer.assignment()
        admitted = []
        for record in records:
            message = record.message
            verdict = consumer.order.check(message.tp, message.offset) if message.tp in owned else Order.DROP
            if verdict in APPLIED:
                admitted.append((record, verdict is not Order.APPLY_AGAIN))
                consumer.taken.add(message)
                if verdict is Order.APPLY_AFTER_GAP:
                    await consumer.skip_gap(message.tp, consumer.order.gaps[message.tp])
                continue
            if verdict is Order.REFETCH:
                hole = consumer.order.holes[message.tp]
                log.warning(
                    "records %d to %d of %s never reached the worker (dropped around a rebalance); reading them again",
                    hole.start,
                    hole.end - 1,
                    message.tp,
                )
                self.on_refetch()
                await consumer.seek_back(message.tp, hole.start)
        return admitted

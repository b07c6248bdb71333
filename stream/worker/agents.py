"""The worker's Faust agents, tasks and clocks: thin, they decode nothing themselves and call the app.

The ingest task takes inference-events and inference-labels records a batch
at a time from the intake the consumer fills (see :mod:`stream.worker.intake`),
so that each model's share of the batch is applied in one go: single-event
records from producers without the SDK then cost about what envelopes cost.

The checkpoint clock covers a quiet stream, and the moments when Faust
waits for every held record to be released: before it hands partitions over
in a rebalance, and before its last commit when the worker stops. That is
why the clock is a plain asyncio task rather than a Faust timer: Faust stops
its timers before it waits, and the wait would then last until the shutdown
watchdog fired.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

from stream.worker.faust_compat import FetchedRecord
from stream.worker.memory_release import RELEASE_INTERVAL_S, release_free_memory

if TYPE_CHECKING:
    from stream.worker.app import MonitorApp

log = logging.getLogger(__name__)

# How often the models this worker holds are checked for silence (no records by the wall clock).
SILENCE_CHECK_S = 5.0
# How often the input partitions are checked for a fetch that stopped (see stream.worker.stall).
STALL_CHECK_S = 5.0


def register(mon: MonitorApp) -> None:
    """Attach the ingest task, the timers (silence, stalls, join expiry, memory release) and the checkpoint clock."""
    settings = mon.settings

    async def take_in() -> None:
        consumer = mon.app.consumer
        while True:
            records = [FetchedRecord(message, consumer) for message in await consumer.take_intake()]
            # When the worker stops, Faust cancels this task. The batch is finished and
            # its states saved first: nothing may be committed that no saved state covers.
            applying = asyncio.ensure_future(mon.ingest.batch(records))
            try:
                await asyncio.shield(applying)
            except asyncio.CancelledError:
                await applying
                await mon.checkpoint(force=True)
                raise
            finally:
                for record in records:
                    record.give_back()

    @mon.app.task
    async def ingest():
        try:
            await take_in()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # As an agent's would: a worker that no longer applies its records must not look alive.
            log.exception("the ingest task failed")
            await mon.app.crash(exc)

    @mon.app.timer(interval=SILENCE_CHECK_S)
    async def check_silence():
        await mon.check_traffic()

    @mon.app.timer(interval=STALL_CHECK_S)
    async def restart_stalled_fetches():
        await mon.restart_stalled_fetches()

    # A short time-to-live is honoured within a quarter of itself; a long one is checked every minute.
    @mon.app.timer(interval=min(60.0, max(settings.label_ttl_s / 4, 0.5)))
    async def expire_join_entries():
        expired = await mon.expire_join_entries()
        if expired:
            log.info("label join: %d entries past their %g s time-to-live removed", expired, settings.label_ttl_s)

    @mon.app.timer(interval=RELEASE_INTERVAL_S)
    async def release_memory():
        release_free_memory()

    interval = settings.checkpoint_interval_s / 4

    async def clock() -> None:
        while True:
            await asyncio.sleep(interval)
            mon.checkpointer.start()

    @mon.app.task
    async def start_checkpoint_clock():
        # Kept on the app object so the task is not garbage-collected.
        mon.checkpoint_clock = asyncio.ensure_future(clock())

    @mon.app.task
    async def say_where_the_pages_are():
        # Faust's start-up tables end without the addresses an operator needs next.
        while not mon.ready:
            await asyncio.sleep(0.25)
        url = settings.advertised_url
        sys.stderr.write(
            f"stream-monitor worker: ready; live page {url}/  metrics {url}/metrics  health {url}/health\n"
        )
        sys.stderr.flush()

    @mon.app.on_partitions_revoked.connect
    async def on_partitions_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        mon.forget_state()

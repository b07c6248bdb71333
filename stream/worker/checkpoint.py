"""Model state checkpoints: one changelog write per model per interval, not per record.

Writing a model's whole state (tens to hundreds of KB) to its changelog for
every input record held a worker to a few hundred records a second. Instead
the live state stays in memory, and every input record that changed it is
*held*: its Kafka message keeps a reference, so Faust cannot commit its
offset. Once per ``checkpoint_interval_s``, or after
``checkpoint_max_records`` held records or ``checkpoint_max_mb`` of them,
each changed model's state is written with the offsets it covers, and only
then are its records released for the commit. A crash between two
checkpoints loses nothing: the uncommitted records are read again, and the
offsets inside the restored state tell which of them it already holds.

A record is released only once the broker has *confirmed* the state write
(:class:`~stream.worker.changelog_writes.ChangelogWrites`): Faust's flush before a commit gives up after
100 ms, so a commit could otherwise overtake the very write that covers it,
and a worker leaving the group lost the records between its last two
checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stream.monitoring.label_join import expand_join_record, join_batch
from stream.web.metrics import WorkerMetrics
from stream.worker.changelog_writes import ChangelogWrites
from stream.worker.counters import WorkerCounters
from stream.worker.state_codec import encode_state

if TYPE_CHECKING:
    from stream.monitoring.model_monitor import ModelMonitor
    from stream.worker.state_cache import ModelStates

log = logging.getLogger(__name__)


def _ack_each(records: list[Any]) -> None:
    for record in records:
        record.ack()


@dataclass(slots=True)
class HeldModel:
    """One model's input records since its last checkpoint, and its partition.

    ``skipped`` holds, per record, the items that raised and were dead-lettered
    instead of applied, so that re-applying the record leaves them out.
    """

    partition: int
    records: list[Any] = field(default_factory=list)
    skipped: list[frozenset[int]] = field(default_factory=list)
    size: int = 0


class HeldRecords:
    """Input records waiting for their model's next checkpoint.

    A record is a Faust event; holding it keeps a reference to its message
    (``record.keep()``: the one the intake took for it, or another) so that
    the offset is not committed, and :meth:`release` gives that reference
    back once the state is written.

    >>> clock = [0.0]
    >>> held = HeldRecords(interval_s=1.0, max_records=3, clock=lambda: clock[0])
    >>> held.mark("m", partition=2)
    >>> held.due(), held.changed
    (False, 1)
    >>> clock[0] = 1.5
    >>> held.due()
    True
    >>> taken = held.take()
    >>> list(taken), taken["m"].partition, held.changed
    (['m'], 2, 0)
    """

    def __init__(
        self,
        interval_s: float,
        max_records: int,
        max_models: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        release: Callable[[list[Any]], None] | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.interval_s = interval_s
        # The worker gives its records back to Faust together (FetchedRecord.ack_all); one by one otherwise.
        self.release_all = release or _ack_each
        self.max_records = max_records
        # Records of a few kilobytes each fill memory long before their count reaches max_records.
        self.max_bytes = max_bytes
        self.max_models = max_models
        self.clock = clock
        self.models: dict[str, HeldModel] = {}
        self.count = 0
        self.last_checkpoint = clock()

    @property
    def bytes(self) -> int:
        """The bytes of the records held (a sum over at most ``max_models`` changed models)."""
        return sum(held.size for held in self.models.values())

    @property
    def changed(self) -> int:
        """Models changed since the last checkpoint."""
        return len(self.models)

    def mark(self, model: str, partition: int) -> None:
        """Note that ``model`` (in ``partition``) changed and needs writing."""
        if model not in self.models:
            self.models[model] = HeldModel(partition)

    def hold(
        self, model: str, partition: int, record: Any, skipped: frozenset[int] = frozenset(), size: int = 0
    ) -> None:
        """Keep ``record`` (``size`` bytes; ``skipped``: its items not applied) until ``model``'s next checkpoint."""
        record.keep()
        self.mark(model, partition)
        held = self.models[model]
        held.records.append(record)
        held.skipped.append(skipped)
        held.size += size
        self.count += 1

    def records_of(self, model: str) -> list[tuple[Any, frozenset[int]]]:
        """The records of ``model`` applied since its last checkpoint, oldest first, with their skipped items."""
        held = self.models.get(model)
        return list(zip(held.records, held.skipped, strict=True)) if held else []

    def over_limit(self, times: int = 1) -> bool:
        """Whether ``times`` the limit of records, or of their bytes, is held.

        >>> from types import SimpleNamespace
        >>> held = HeldRecords(interval_s=3600, max_records=100, max_bytes=1000)
        >>> held.hold("m", 0, SimpleNamespace(keep=lambda: None), size=600)
        >>> held.over_limit(), held.due()
        (False, False)
        >>> held.hold("m", 0, SimpleNamespace(keep=lambda: None), size=600)
        >>> held.over_limit(), held.over_limit(times=2), held.due()
        (True, False, True)
        """
        return self.count >= times * self.max_records or (
            self.max_bytes is not None and self.bytes >= times * self.max_bytes
        )

    def due(self) -> bool:
        """Whether a checkpoint is due: the interval passed, or too many records or models wait.

        A changed model's state cannot leave the memory until it is saved, so
        ``max_models`` (the state cache's size) bounds how many wait.
        """
        if not self.models:
            return False
        return self.over_limit() or self.models_full() or self.clock() - self.last_checkpoint >= self.interval_s

    def models_full(self, saving: int = 0) -> bool:
        """Whether ``max_models`` models changed (with ``saving`` more being saved): their states stay in memory
        until a checkpoint saves them.

        >>> held = HeldRecords(interval_s=3600, max_records=100, max_models=2)
        >>> held.mark("m", partition=0)
        >>> held.models_full(), held.due()
        (False, False)
        >>> held.mark("n", partition=0)
        >>> held.models_full(), held.due()
        (True, True)
        """
        return self.max_models is not None and len(self.models) + saving >= self.max_models

    def take(self) -> dict[str, HeldModel]:
        """Every changed model with its held records; the caller writes them, then releases."""
        taken, self.models, self.count = self.models, {}, 0
        self.last_checkpoint = self.clock()
        return taken

    def release(self, records: list[Any]) -> None:
        """Let Faust commit these records: their model's state now covers them."""
        self.release_all(records)

    def restore(self, taken: dict[str, HeldModel]) -> None:
        """Hold again what :meth:`take` gave out (its checkpoint failed), before what was held since.

        >>> held = HeldRecords(interval_s=1.0, max_records=10)
        >>> held.mark("m", partition=0)
        >>> taken = held.take()
        >>> held.mark("m", partition=0)
        >>> held.restore(taken)
        >>> held.changed, held.models["m"] is taken["m"]
        (1, True)
        """
        for model, earlier in taken.items():
            later = self.models.get(model)
            if later is not None:
                earlier.records += later.records
                earlier.skipped += later.skipped
                earlier.size += later.size
                self.count -= len(later.records)
            self.models[model] = earlier
            self.count += len(earlier.records)

    def drop(self) -> int:
        """Forget everything held without releasing it (partitions lost); returns how many records."""
        dropped = self.count
        self.models, self.count = {}, 0
        return dropped


# Label-join entries a model's state may carry before a checkpoint is forced: 20,000 with
# uuid request ids, confidence and segment compressed to 740 KB, near Kafka's 1 MB limit.
MAX_JOIN_CHANGES = 10_000


class Checkpointer:
    """Saves the changed model states, when a checkpoint is due, and then releases their records.

    A state is saved with the label-join entries its records wrote since its
    last checkpoint (``ModelMonitor.join_changes``); once the broker has the
    state, they are written to ``join_table`` (see
    :mod:`stream.monitoring.label_join`). So the join table never runs ahead
    of the states: after a crash, a record applied again to its model's
    restored state finds the join as that state left it.

    Records are released only once the broker has confirmed every state
    write made so far. A checkpoint lets the event loop run every 50 ms or
    so: with hundreds of busy models it takes seconds. The ingest and the
    clock start a due one and go on (:meth:`start`); what the ingest applies
    meanwhile is held for the next one, and it waits only once that would
    hold too much (:meth:`checkpoint_if_full`). A failed checkpoint holds
    its records again for the next one. Partitions revoked meanwhile
    (:meth:`revoke`) end it without saving or releasing anything more: the
    records are their next owner's to apply again.
    """

    def __init__(
        self,
        states: ModelStates,
        table: Any,
        held: HeldRecords,
        writes: ChangelogWrites,
        counters: WorkerCounters | None = None,
        metrics: WorkerMetrics | None = None,
        join_table: Any = None,
    ) -> None:
        self.states = states
        self.table = table
        self.join_table = join_table
        self.held = held
        self.writes = writes
        self.counters = counters or WorkerCounters()
        self.metrics = metrics or WorkerMetrics()
        # One checkpoint at a time, and none while a poisoned batch is undone.
        self.lock = asyncio.Lock()
        # Counts the revocations: a checkpoint that outlives one must not save or release.
        self.generation = 0
        # The models of the checkpoint under way, until each is saved.
        self.saving: dict[str, HeldModel] = {}
        # Models whose live state a poisoned batch may have half-updated, until it is undone.
        self.undone: set[str] = set()
        # The checkpoint the ingest started and did not wait for; kept so that it is not garbage-collected.
        self.running: asyncio.Future[None] | None = None

    def unsaved(self, model: str) -> bool:
        """Whether ``model``'s live state holds changes the broker has not confirmed as saved yet.

        The state cache must keep such a state, and trust it over the table's.
        """
        return model in self.held.models or model in self.saving

    def save(self, model: str, partition: int, monitor: ModelMonitor) -> tuple[int, dict[str, bytes]]:
        """Write the model's state, with the offsets it covers, to its table entry and changelog.

        The sequence number counts the checkpoints. Returns it, and the
        label-join entries saved with the state.
        """
        monitor.seq += 1
        join_changes = dict(monitor.join_changes)
        blob = encode_state(monitor.to_dict())
        # The store takes the state only once the broker has it. Taken at once, a write the
        # broker then lost stayed in the store: after a rebalance that kept the partition, the
        # state reloaded from it covered records the changelog's did not, those records were
        # skipped as replayed and committed, and a later owner never counted them.
        generation = self.generation
        self.writes.write(
            self.table,
            partition,
            model.encode(),
            blob,
            when_stored=True,
            still_owned=lambda: generation == self.generation,
        )
        self.states.put(model, monitor, blob)
        return monitor.seq, join_changes

    async def checkpoint_if_full(self, monitor: ModelMonitor | None) -> bool:
        """Checkpoint now, not when due, and wait for it, if going on would hold too much; whether it did.

        Too much: ``monitor`` carries ``MAX_JOIN_CHANGES`` join entries not yet
        stored (they are saved in its state, which would pass the broker's
        limit on a record's size); as many models changed or being saved as
        the state cache holds (none of them may leave memory until saved, so
        a batch of a thousand models' records would keep them all); or twice
        the limit of records or bytes held, the ingest having gone on while a
        checkpoint ran. ``monitor`` None: nothing was applied, so nothing new waits.
        """
        if monitor is None or not (
            len(monitor.join_changes) >= MAX_JOIN_CHANGES
            or self.held.models_full(saving=len(self.saving))
            or self.held.over_limit(times=2)
        ):
            return False
        await self.checkpoint(force=True)
        return True

    def start(self) -> None:
        """Start a due checkpoint without waiting for it: the states are encoded in slices and the broker
        confirms them while the caller applies what was fetched meanwhile."""
        if self.lock.locked() or (self.running is not None and not self.running.done()) or not self.held.due():
            return
        self.running = asyncio.ensure_future(self._checkpoint_logged())

    async def _checkpoint_logged(self) -> None:
        try:
            await self.checkpoint()
        except Exception:
            log.exception("checkpoint failed; the held records stay uncommitted and are retried")

    async def checkpoint(self, force: bool = False) -> int:
        """Save every model changed since the last checkpoint, when one is due; release its records.

        Returns how many models were saved.
        """
        if self.lock.locked() and not force:
            return 0
        async with self.lock:
            if not self.held.changed or not (force or self.held.due()):
                return 0
            return await self._save_held()

    async def _save_held(self) -> int:
        generation = self.generation
        taken = self.saving = self.held.take()
        try:
            saved = await self._save_states(taken, generation)
        finally:
            self.saving = {}
        if saved is None or generation != self.generation:
            return 0
        self.held.release([record for held in taken.values() for record in held.records])
        self.counters.checkpoints += 1
        self.metrics.checkpoints.inc()
        await self._write_join_changes({model: (taken[model].partition, *batch) for model, batch in saved.items()})
        return len(taken)

    async def _save_states(
        self, taken: dict[str, HeldModel], generation: int
    ) -> dict[str, tuple[int, dict[str, bytes]]] | None:
        """Write the states of ``taken`` and wait until stored; the sequence number and join entries saved in each.

        None if it failed (the records are held again) or partitions were revoked meanwhile.
        """
        paused = time.perf_counter()
        saved = {}
        try:
            monitors = {model: self.states.cached(model) for model in taken}
            for model, held in list(taken.items()):
                if model in self.undone:
                    # Saved once the poisoned batch is undone, at the next checkpoint.
                    self.held.restore({model: taken.pop(model)})
                    continue
                saved[model] = self.save(model, held.partition, monitors[model])
                if time.perf_counter() - paused > 0.05:
                    await asyncio.sleep(0)
                    paused = time.perf_counter()
                    if generation != self.generation:
                        return None
            await self.writes.confirm()
        except Exception:
            log.exception("checkpoint failed; its %d models' records stay uncommitted until the next", len(taken))
            self.counters.checkpoint_failures += 1
            self.metrics.checkpoint_failures.inc()
            if generation == self.generation:
                self.held.restore(taken)
            return None
        return saved

    async def _write_join_changes(self, saved: dict[str, tuple[int, int, dict[str, bytes]]]) -> None:
        """Send the join entries saved with each state (model: partition, seq, entries) to the join table; forget them.

        A model's entries go as one record (:func:`join_batch`). Once stored,
        they are dropped from the live state, unless changed since; a state
        evicted meanwhile and read again leaves them out itself
        (``ModelLabels.settle_loaded``). No state is held here: the cache
        decides what stays in memory. The next checkpoint waits for this one,
        so no state saved without them is stored before they are. Should a
        write fail, the entries stay in the live state, to be saved and sent
        again.
        """
        if self.join_table is None or not any(entries for _, _, entries in saved.values()):
            return
        generation = self.generation
        for model, (partition, seq, entries) in saved.items():
            if generation != self.generation:
                return  # revoked: the partitions' next owner has the states, and the entries in them
            if entries:
                key, value = join_batch(model, seq, entries)
                stored_as = expand_join_record(key, value)
                self.writes.write(self.join_table, partition, key, value, when_stored=True, stored_as=stored_as)
            # Faust buffers changelog records without bound: a checkpoint of a thousand
            # models' batches sent at once could hold hundreds of megabytes.
            await self.writes.ebb()
        try:
            await self.writes.confirm()
        except Exception:
            log.exception("label-join entries not stored; their states keep them for the next checkpoint")
            return
        if generation != self.generation:
            return
        for model, (_, _, entries) in saved.items():
            if model not in self.states:
                continue
            changes = self.states.cached(model).join_changes
            for request_id, entry in entries.items():
                if changes.get(request_id) is entry:
                    del changes[request_id]

    def revoke(self) -> int:
        """Partitions revoked: drop the live states and what they held; returns how many records were held."""
        self.generation += 1
        dropped = self.held.drop()
        if dropped:
            log.warning("%d input records not yet checkpointed are left for the partitions' next owner", dropped)
        self.states.clear()
        return dropped

    @contextlib.asynccontextmanager
    async def undoing(self, model: str) -> AsyncIterator[None]:
        """No checkpoint runs, and none saves ``model``, while its half-updated state is undone."""
        self.undone.add(model)
        try:
            async with self.lock:
                yield
        finally:
            self.undone.discard(model)

"""Faust's tables, reached outside an agent: each partition's store read and written directly, changelog
records sent with a future, and whether the tables are ready.

Public in spirit but undocumented: a table's store, the changelog send that
returns a future, a message's reference count, the assignor's active
partitions, and the recovery flags.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import faust
from faust.stores import memory as faust_memory
from faust.stores import rocksdb as faust_rocksdb
from faust.types import TP, EventT
from yarl import URL

# What a changelog record stands for in the store: (key, value or None to delete) pairs,
# or None for the record itself.
Expansion = Callable[[bytes, bytes | None], list[tuple[bytes, bytes | None]] | None]

# RocksDB settings for each of the label join's partition databases; Faust's defaults
# (a 2 GB block cache and three 64 MB write buffers, per partition) are sized for a
# machine of its own. The join reads each key once, at random (a label finds its
# prediction), so a block cache of its own per partition held memory and saved no reads:
# the blocks come from the page cache, which the kernel shares and gives back.
JOIN_ROCKSDB_OPTIONS = {
    "driver": "rocksdict",
    "write_buffer_size": 2 << 20,
    "max_write_buffer_number": 2,
    "block_cache_size": 1 << 20,
    "bloom_filter_size": 10,
}


def rocksdb_store_url(table_name: str) -> str:
    """The store URL that puts one table on RocksDB, under Faust's table folder.

    Faust takes a table's own store only when its URL is true, and yarl's
    ``URL("rocksdb://")``, the form Faust documents, is false: the table
    stayed in memory without a word.
    """
    return f"rocksdb:{table_name}"


def _rocksdb(table: Any) -> Any:
    """The table's Faust RocksDB store, or None for an in-memory one."""
    store = table.data
    return store if isinstance(store, faust_rocksdb.Store) else None


def store_get(table: Any, partition: int, key: bytes) -> bytes | None:
    """The value of ``key`` in the table's local store (in ``partition``'s database, for RocksDB), or None."""
    rocks = _rocksdb(table)
    if rocks is not None:
        return rocks._db_for_partition(partition).get(key)
    store = table.data
    # Faust's in-memory store.get raises and catches KeyError inside on a miss (0.58 against 0.12 µs here).
    return store[key] if key in store else None  # noqa: SIM401


def store_put(table: Any, partition: int, key: bytes, value: bytes | None) -> None:
    """Set (or, with ``value`` None, delete) ``key`` in the table's local store, in ``partition``."""
    rocks = _rocksdb(table)
    if rocks is None:
        if value is None:
            table.data.pop(key, None)
        else:
            table.data[key] = value
    elif value is None:
        rocks._db_for_partition(partition).delete(key)
    else:
        rocks._db_for_partition(partition).put(key, value)


def store_scan(table: Any, partitions: set[int] | None = None) -> Iterator[tuple[bytes, bytes]]:
    """The table's local entries as (key, value), those of ``partitions`` only for RocksDB (default: all open).

    RocksDB iterates each partition's database in key order from a snapshot
    of it; the in-memory store from a snapshot of its keys.
    """
    rocks = _rocksdb(table)
    if rocks is None:
        store = table.data
        for key in list(store.keys()):
            value = store.get(key)
            if value is not None:
                yield key, value
        return
    for partition, db in list(rocks._dbs.items()):
        if partitions is None or partition in partitions:
            for key, value in db.items():
                if key != rocks.offset_key:
                    yield key, value


def send_changelog(table: Any, partition: int, key: bytes, value: Any) -> Awaitable[Any]:
    """Send one changelog record of ``table`` to ``partition``; the future resolves once the broker has it."""
    return table.send_changelog(partition, key, value)


def active_partitions(app: faust.App, topic: str) -> set[int]:
    """The partitions of ``topic`` this worker actively owns (standby copies excluded)."""
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}


def tables_ready(app: faust.App) -> bool:
    """Partitions assigned and table recovery done."""
    recovery = app.tables.recovery
    return bool(app.consumer and recovery.completed.is_set() and not recovery.in_recovery and not app.rebalancing)


class MemoryStoreKeepingOffsets(faust_memory.Store):
    """Faust's in-memory store, which also knows up to which changelog offset it holds each partition.

    Faust's own says it holds none (``persisted_offset`` is None), so every
    rebalance read an in-memory table's changelog from its first record, for
    partitions this worker had held all along and for those its standby copy
    had followed; and it dropped the standby copy once a rebalance's recovery
    ended. This one counts the offsets it applied from the changelog and the
    offsets of its own writes the broker confirmed (as Faust's RocksDB store
    does), keeps the partitions still active or on standby, and forgets the
    others, keys and offset, so that one assigned again later is read from
    the beginning.

    >>> import asyncio
    >>> store = MemoryStoreKeepingOffsets("memory://", faust.App("doc"), None, table_name="t")
    >>> def record(partition, offset, key):
    ...     tp = TP("t-changelog", partition)
    ...     return _EntryEvent(key, b"v", _EntryMessage(tp, partition, offset, key, b"v"))
    >>> store.persisted_offset(TP("t-changelog", 1)) is None  # never read: from the beginning
    True
    >>> store.apply_changelog_batch([record(1, 7, b"a"), record(2, 3, b"b")], bytes, bytes)
    >>> store.set_persisted_offset(TP("t-changelog", 1), 9)  # its own write, confirmed
    >>> store.set_persisted_offset(TP("t-changelog", 1), 8)  # an earlier one confirmed late
    >>> store.persisted_offset(TP("t-changelog", 1)), store.persisted_offset(TP("t-changelog", 2))
    (9, 3)

    A rebalance that leaves partition 1 active and 2 on standby keeps both;
    one that leaves 2 nowhere forgets it:

    >>> asyncio.run(store.on_recovery_completed({TP("t-changelog", 1)}, {TP("t-changelog", 2)}))
    >>> sorted(store.keys())
    [b'a', b'b']
    >>> asyncio.run(store.on_recovery_completed({TP("t-changelog", 1)}, set()))
    >>> sorted(store.keys()), store.persisted_offset(TP("t-changelog", 2)) is None
    ([b'a'], True)
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._offsets: dict[TP, int] = {}

    def apply_changelog_batch(
        self, batch: Iterable[EventT], to_key: Callable[[Any], Any], to_value: Callable[[Any], Any]
    ) -> None:
        events = list(batch)
        super().apply_changelog_batch(events, to_key, to_value)
        for event in events:
            self.set_persisted_offset(event.message.tp, event.message.offset)

    def persisted_offset(self, tp: TP) -> int | None:
        return self._offsets.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        if offset > self._offsets.get(tp, -1):
            self._offsets[tp] = offset

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        kept = {tp.partition for tp in active_tps | standby_tps}
        for key in [key for key, partition in self._key_partition.items() if partition not in kept]:
            self.data.pop(key, None)
            del self._key_partition[key]
        for tp in [tp for tp in self._offsets if tp.partition not in kept]:
            del self._offsets[tp]

    def _clear(self) -> None:
        super()._clear()
        self._key_partition.clear()
        self._offsets.clear()


class OffsetKeepingTable(faust.Table):
    """A Faust table whose in-memory store is :class:`MemoryStoreKeepingOffsets` (other stores as Faust makes them)."""

    def _new_store_by_url(self, url: str | URL) -> Any:
        if URL(str(url)).scheme != "memory":
            return super()._new_store_by_url(url)
        return MemoryStoreKeepingOffsets(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )


class ExpandingTable(OffsetKeepingTable):
    """A Faust table whose changelog records may each stand for several store entries, or for none.

    ``expand(key, value)`` says what the store takes of a record read back
    from the changelog (recovery, standby copies); the records this worker
    writes reach its store through :class:`~stream.worker.changelog_writes.ChangelogWrites`.
    Faust's stores read a record's key, value, partition and offset from each
    event: the entries of one record share its partition and offset.
    """

    def __init__(self, app: faust.App, *, expand: Expansion, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.expand = expand

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        """Faust's restore of changelog records into the store, each expanded first."""
        super().apply_changelog_batch(_expanded(batch, self.expand))


@dataclass(slots=True)
class _EntryMessage:
    tp: TP
    partition: int
    offset: int
    key: bytes
    value: bytes | None


@dataclass(slots=True)
class _EntryEvent:
    key: bytes
    value: bytes | None
    message: _EntryMessage


def _expanded(batch: Iterable[EventT], expand: Expansion) -> Iterator[Any]:
    for event in batch:
        message = event.message
        entries = expand(message.key, message.value)
        if entries is None:
            yield event
            continue
        for key, value in entries:
            yield _EntryEvent(key, value, _EntryMessage(message.tp, message.partition, message.offset, key, value))

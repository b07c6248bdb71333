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
from faust.stores import rocksdb as faust_rocksdb
from faust.types import TP, EventT, Message

# What a changelog record stands for in the store: (key, value or None to delete) pairs,
# or None for the record itself.
Expansion = Callable[[bytes, bytes | None], list[tuple[bytes, bytes | None]] | None]

# RocksDB settings for each of the label join's partition databases; Faust's defaults
# (a 2 GB block cache and three 64 MB write buffers, per partition) are sized for a
# machine of its own.
JOIN_ROCKSDB_OPTIONS = {
    "driver": "rocksdict",
    "write_buffer_size": 4 << 20,
    "max_write_buffer_number": 2,
    "block_cache_size": 8 << 20,
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


def hold_message(message: Message) -> None:
    """Keep Faust from committing ``message``'s offset until its record is acknowledged once more."""
    message.incref()


def active_partitions(app: faust.App, topic: str) -> set[int]:
    """The partitions of ``topic`` this worker actively owns (standby copies excluded)."""
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}


def tables_ready(app: faust.App) -> bool:
    """Partitions assigned and table recovery done."""
    recovery = app.tables.recovery
    return bool(app.consumer and recovery.completed.is_set() and not recovery.in_recovery and not app.rebalancing)


class ExpandingTable(faust.Table):
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

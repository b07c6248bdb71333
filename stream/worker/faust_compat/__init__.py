"""Every private name of Faust and aiokafka the worker relies on, checked when this package is imported.

At-least-once delivery rests on a few of Faust's internals, which have
changed between releases (``_add_gap`` became a coroutine, ``_gap`` an
interval tree, ``_new_offset`` gained a ``+ 1``). They are all used in this
package and nowhere else (:mod:`.consumer`, the worker's consumer and
transport; :mod:`.tables`, table stores reached outside an agent;
:mod:`.worker`, the stop signal), and :func:`check_faust` stops the worker with one line naming
the installed versions when one of them is missing or has another shape.
``pyproject.toml`` pins the versions tested.

What is worked around, each worth reporting upstream:

- **Fetch wait.** Faust builds its aiokafka consumer with
  ``fetch_max_wait_ms=1500`` and has no setting for it. On the embedded
  broker a fetch was held that long even when records arrived meanwhile, so
  records reached the agents in bursts about every 750 ms. With 100 ms they
  reach them within 25 ms; on a real cluster it only costs a few more empty
  fetches per second while idle.
- **Records dropped around a rebalance.** Faust may fetch records and drop
  them before they reach an agent, acknowledge them all the same and commit
  past them. :class:`Consumer` acknowledges an input record only once the
  ingest task took it in, and reads a partition again from a hole (see
  :mod:`stream.worker.offset_order`). Related upstream: faust-streaming
  issue 221 (prefetched records out of order after a rebalance).
- **Seek from the wrong thread.** Faust's ``seek`` calls aiokafka from the
  agents' thread while the consumer thread may be draining that partition's
  prefetched records; aiokafka's fetcher then deletes the partition's entry
  twice (``KeyError`` in ``fetched_records``) and the worker crashes
  (:meth:`Consumer.seek_back` seeks in the consumer's thread instead).
- **Duplicate filter after a seek back.** Faust drops a fetched record whose
  offset is below the last one read; after a seek back the records read
  again were dropped too (:class:`ChangelogReadOffsets`).
- **Commit off by one.** Faust commits past the record at the committed
  offset when the one after it is done, and past any first record while it
  revokes (:meth:`Consumer._new_offset`). Upstream: faust-streaming issue
  606 (wrong offset commit with gaps, open), after 312 and 378.
- **A partition that stops moving.** After a broker restart one input
  partition was once left unread while the others went on, with nothing
  logged (:meth:`Consumer.restart_fetch`, driven by
  :mod:`stream.worker.stall`).
- **Records one by one.** Faust hands each fetched record to its agent on its
  own, at about 80 µs per record here, and its ``take`` gathers nothing
  while the agent works. :class:`Consumer` puts the records of the input
  topics in an :class:`~stream.worker.intake.Intake` instead, as it fetches
  them (:meth:`Consumer._wait_next_records`), and tracks them for the commit once taken,
  as Faust's streams do.
- **Table writes outside an agent.** Faust's stores take the partition of a
  write from the current event, and its RocksDB store asserts there is one;
  the checkpointer writes each model's entries in the model's partition,
  outside any event (:func:`store_put`, :func:`store_get`, :func:`store_scan`
  reach the partition's database directly).
- **One changelog record for many entries.** A Faust table restores each
  changelog record as one store entry; the label join writes a model's new
  entries of one checkpoint as one record and looks them up one by one
  (:class:`ExpandingTable` expands each record as Faust restores it).
- **An in-memory table read from its beginning at every rebalance.** Faust's
  in-memory store says it holds no offset, so a rebalance read the whole
  changelog of the model states again, even for partitions the worker had
  held or followed on standby, and dropped the standby copy once recovered
  (:class:`OffsetKeepingTable`, :class:`MemoryStoreKeepingOffsets`).
- **A table's own store ignored.** ``store="rocksdb://"`` on a table left it
  in memory (:func:`rocksdb_store_url`).
- **A changelog read short on Tansu.** Tansu on S3 answers ListOffsets
  with the offset after the batch modified last, to the second, so two
  batches written in the same second made it name an end one record
  short, and Faust's recovery stopped before a model's last state
  (:func:`.consumer.stored_ends` looks past the end it gave). Not yet reported upstream.
- **A stop signal ignored.** A worker whose agents were stuck ignored
  SIGTERM for an hour (:class:`StopSignalWorker`, used by
  :mod:`stream.worker.run`).
"""

from stream.worker.faust_compat.checks import TESTED_AIOKAFKA, TESTED_FAUST, FaustIncompatible, check_faust

check_faust()

from stream.worker.faust_compat.consumer import (  # noqa: E402  (checked first)
    FETCH_MAX_WAIT_MS,
    ChangelogReadOffsets,
    Consumer,
    ConsumerThread,
    FetchedRecord,
    Transport,
    is_changelog,
    subscribe,
    use_worker_transport,
)
from stream.worker.faust_compat.tables import (  # noqa: E402
    JOIN_ROCKSDB_OPTIONS,
    ExpandingTable,
    MemoryStoreKeepingOffsets,
    OffsetKeepingTable,
    active_partitions,
    rocksdb_store_url,
    send_changelog,
    store_get,
    store_put,
    store_scan,
    tables_ready,
)
from stream.worker.faust_compat.worker import StopSignalWorker  # noqa: E402

__all__ = [
    "FETCH_MAX_WAIT_MS",
    "JOIN_ROCKSDB_OPTIONS",
    "TESTED_AIOKAFKA",
    "TESTED_FAUST",
    "ChangelogReadOffsets",
    "Consumer",
    "ConsumerThread",
    "ExpandingTable",
    "FaustIncompatible",
    "FetchedRecord",
    "MemoryStoreKeepingOffsets",
    "OffsetKeepingTable",
    "StopSignalWorker",
    "Transport",
    "active_partitions",
    "check_faust",
    "is_changelog",
    "rocksdb_store_url",
    "send_changelog",
    "store_get",
    "store_put",
    "store_scan",
    "subscribe",
    "tables_ready",
    "use_worker_transport",
]

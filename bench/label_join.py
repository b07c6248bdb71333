"""The label join's cost per prediction: ``python -m bench.label_join [--store memory|rocksdb] [--json]``.

Fills a :class:`~stream.monitoring.label_join.LabelJoiner` with N predictions
(default 1,000,000) of 1,000 models, each with a confidence and a segment, as
the worker does for every prediction while labels flow, over the entries'
JSON text (:class:`~stream.monitoring.label_join.JsonEntries`) in the store
the worker's join table uses (``STREAM_MONITOR_JOIN_STORE``): Faust's
in-memory store, or its RocksDB store, a database per partition, in a
temporary folder. Then one label in four arrives. Prints:

- ``bytes_per_entry``: growth of resident memory per entry, key and table
  slot included (after a garbage collection);
- ``prediction_us`` and ``label_us``: time per prediction stored (a lookup
  that misses, then a write) and per label joined (a lookup that finds it,
  then a write);
- ``changelog_bytes_per_entry``: key and value of one record, as the
  changelog carries it (before the topic's compression);
- ``expiry_pass_s``: one pass over every entry for expired ones, as the
  worker's expiry makes it, and
  ``expiry_slice_ms``: the longest slice of ``EXPIRY_SLICE`` entries, which is how long the
  worker's event loop is held at a time (see ``MonitorApp.expire_join_entries``).

No broker: the store's own cost, which is what grows with traffic.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import tempfile
import time
from collections.abc import Iterator, MutableMapping

import orjson
import psutil

from stream.monitoring.label_join import JsonEntries, LabelJoiner, join_key
from stream.settings import Settings
from stream.worker.app import EXPIRY_SLICE, MonitorApp, TableEntries
from stream.worker.faust_compat import store_put, store_scan

PARTITIONS = 4


class WritableEntries(MutableMapping):
    """The join table as the worker's checkpointer writes it, each key in its model's partition, without a broker."""

    def __init__(self, entries: TableEntries) -> None:
        self.entries = entries

    def __getitem__(self, key: bytes) -> bytes:
        return self.entries[key]

    def get(self, key: bytes, default: object = None) -> object:
        return self.entries.get(key, default)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        store_put(self.entries.table, self.entries.partition_of(key), key, value)

    def __delitem__(self, key: bytes) -> None:
        store_put(self.entries.table, self.entries.partition_of(key), key, None)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def measure(predictions: int, store: str) -> dict[str, float | str]:
    process = psutil.Process()
    with tempfile.TemporaryDirectory() as folder:
        app = MonitorApp(Settings(data_dir=folder, join_store=store, partitions=PARTITIONS))
        table = app.label_join
        gc.collect()
        before = process.memory_info().rss
        joiner = LabelJoiner(JsonEntries(WritableEntries(app.join_store)), ttl_s=6 * 3600.0)
        t0 = 1_800_000_000.0
        began = time.perf_counter()
        for i in range(predictions):
            model = f"model-{i % 1000:04d}"
            joiner.on_prediction(
                model, "1", f"req-{i:012d}", i % 2, t0 + i * 0.001, confidence=0.5 + (i % 50) / 100, segment="eu"
            )
        prediction_s = time.perf_counter() - began
        began = time.perf_counter()
        for i in range(0, predictions, 4):
            joiner.on_label(f"model-{i % 1000:04d}", f"req-{i:012d}", 1, t0 + i * 0.001 + 60)
        label_s = time.perf_counter() - began
        gc.collect()
        grown = process.memory_info().rss - before
        sample = list(itertools.islice(store_scan(table), 0, None, max(1, predictions // 997)))
        changelog = sum(len(key) + len(value) for key, value in sample) / len(sample)
        # As the worker's expiry goes: a slice of the scan at a time.
        scan = store_scan(table)
        whole = worst = 0.0
        while True:
            began = time.perf_counter()
            slice_ = list(itertools.islice(scan, EXPIRY_SLICE))
            if not slice_:
                break
            joiner.expired(entries=((key, orjson.loads(value)) for key, value in slice_))
            took = time.perf_counter() - began
            whole, worst = whole + took, max(worst, took)
        assert joiner.store.get(join_key("model-0000", "req-000000000000"))[0] == "D"
    return {
        "store": store,
        "predictions": predictions,
        "bytes_per_entry": round(grown / predictions, 1),
        "prediction_us": round(prediction_s / predictions * 1e6, 2),
        "label_us": round(label_s / (predictions / 4) * 1e6, 2),
        "changelog_bytes_per_entry": round(changelog, 1),
        "expiry_pass_s": round(whole, 3),
        "expiry_slice_ms": round(worst * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["memory", "rocksdb"], default="rocksdb", help="the join table's store")
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.predictions, args.store)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:28} {value:,}" if not isinstance(value, str) else f"{key:28} {value}")


if __name__ == "__main__":
    main()

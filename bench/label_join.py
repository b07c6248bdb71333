"""The label join's cost per prediction: ``python -m bench.label_join [--predictions N] [--json]``.

Fills a :class:`~stream.monitoring.label_join.LabelJoiner` with N predictions
(default 1,000,000) of 1,000 models, each with a confidence and a segment, as
the worker does for every prediction while labels flow, over a dict of JSON
text (:class:`~stream.monitoring.label_join.JsonEntries`): what the
worker's Faust table holds. Then one label in four arrives. Prints:

- ``bytes_per_entry``: growth of resident memory per entry, key and table
  slot included (after a garbage collection);
- ``changelog_bytes_per_entry``: key and value of one record, as the
  changelog carries it (before the topic's compression);
- ``expiry_pass_s``: one pass over every key for expired entries, and
  ``expiry_slice_ms``: the longest slice of ``EXPIRY_SLICE`` keys, which is how long the
  worker's event loop is held at a time (see ``MonitorApp.expire_join_entries``).

No broker, no Faust: the join's own layout, which is what grows with traffic.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import time

import psutil

from stream.monitoring.label_join import JsonEntries, LabelJoiner, join_key
from stream.worker.app import EXPIRY_SLICE


def measure(predictions: int) -> dict[str, float]:
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    store: dict[bytes, bytes] = {}
    joiner = LabelJoiner(JsonEntries(store), ttl_s=6 * 3600.0)
    t0 = 1_800_000_000.0
    for i in range(predictions):
        model = f"model-{i % 1000:04d}"
        joiner.on_prediction(
            model, "1", f"req-{i:012d}", i % 2, t0 + i * 0.001, confidence=0.5 + (i % 50) / 100, segment="eu"
        )
    for i in range(0, predictions, 4):
        joiner.on_label(f"model-{i % 1000:04d}", f"req-{i:012d}", 1, t0 + i * 0.001 + 60)
    gc.collect()
    grown = process.memory_info().rss - before
    sample = list(itertools.islice(store.items(), 1000))
    changelog = sum(len(key) + len(value) for key, value in sample) / len(sample)
    started = time.perf_counter()
    joiner.expired()
    whole = time.perf_counter() - started
    keys = list(store)
    worst = 0.0
    for start in range(0, len(keys), EXPIRY_SLICE):
        began = time.perf_counter()
        joiner.expired(keys=keys[start : start + EXPIRY_SLICE])
        worst = max(worst, time.perf_counter() - began)
    assert len(store) == predictions and join_key("model-0000", "req-000000000000") in store
    return {
        "predictions": predictions,
        "bytes_per_entry": round(grown / predictions, 1),
        "changelog_bytes_per_entry": round(changelog, 1),
        "expiry_pass_s": round(whole, 3),
        "expiry_slice_ms": round(worst * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.predictions)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:28} {value:,}")


if __name__ == "__main__":
    main()

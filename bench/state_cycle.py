"""What reading and writing one model's state costs: ``python -m bench.state_cycle``.

A worker with more models than its state cache (``state_cache_models``)
reads a model's state back from the table, applies its records and writes
it again, for every model in turn; a failover does the same for every model
it takes over. This builds one model as ``bench.steady`` leaves each of its
1,000 (2,200 events of 10 features in envelopes of 200, a label for every
fourth prediction) and prints, as one JSON object:

- ``stored_bytes``: its table entry, as stored and sent to the changelog;
- ``to_dict_ms``, ``encode_ms``, ``decode_ms``, ``load_ms`` (decoding and
  rebuilding the monitor), ``cycle_ms`` (reading it back and writing it
  again): CPU time, the best of ``--repeats``;
- ``blocks_decoded``: memory blocks the decoded state holds before the
  monitor is built from it (Python's allocator and numpy's), the short-lived
  objects every read leaves among long-lived ones;
- ``blocks_monitor``: blocks the rebuilt monitor keeps;
- ``live_kb``: the memory the rebuilt monitor holds (``tracemalloc``: its
  Python objects and numpy's arrays), what each of the ``state_cache_models``
  live models costs a worker.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Callable

import orjson

from bench.steady import rounds
from stream.monitoring.model_monitor import ModelMonitor
from stream.settings import Settings
from stream.worker.state_codec import decode_state, encode_state


def steady_model() -> ModelMonitor:
    """One model of ``bench.steady`` at the end of its rounds, labels included."""
    monitor = ModelMonitor("m0", Settings().detection)
    for envelopes, labels in rounds(["m0"], 1_700_000_000.0):
        predictions = {}
        for _, blob in envelopes:
            events = orjson.loads(blob)["events"]
            monitor.process(events)
            predictions.update((event["request_id"], event) for event in events)
        for _, raw in labels:
            label = orjson.loads(raw)
            event = predictions[label["request_id"]]
            monitor.process_label("1", label["label"], event["prediction"], label["timestamp"], event["confidence"])
    return monitor


def best_ms(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return round(min(times) * 1e3, 2)


def measure(repeats: int) -> dict[str, float]:
    detection = Settings().detection
    monitor = steady_model()
    blob = encode_state(monitor.to_dict())
    gc.disable()
    try:
        start = sys.getallocatedblocks()
        state = decode_state(blob)
        decoded = sys.getallocatedblocks() - start
        rebuilt = ModelMonitor.from_dict("m0", detection, state)
        del state
        kept = sys.getallocatedblocks() - start
    finally:
        gc.enable()
    del rebuilt
    # A rebuild of its own: the one above filled caches every later rebuild shares (about 27 KB).
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        rebuilt = ModelMonitor.from_dict("m0", detection, decode_state(blob))
        gc.collect()
        live = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del rebuilt

    def load() -> ModelMonitor:
        return ModelMonitor.from_dict("m0", detection, decode_state(blob))

    return {
        "stored_bytes": len(blob),
        "to_dict_ms": best_ms(monitor.to_dict, repeats),
        "encode_ms": best_ms(lambda: encode_state(monitor.to_dict()), repeats),
        "decode_ms": best_ms(lambda: decode_state(blob), repeats),
        "load_ms": best_ms(load, repeats),
        "cycle_ms": best_ms(lambda: encode_state(load().to_dict()), repeats),
        "blocks_decoded": decoded,
        "blocks_monitor": kept,
        "live_kb": round(live / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="runs of each step; the best counts")
    args = parser.parse_args()
    print(json.dumps(measure(args.repeats)))


if __name__ == "__main__":
    main()

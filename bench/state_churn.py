"""The worker's model states alone, read back and written again as at 1,000 models: ``python -m bench.state_churn``.

``bench.steady`` reads a whole worker's memory. This takes the part the
model states account for: the same rounds of envelopes (one of 200 events
per model per round, 2,200 events per model), applied in process through
:class:`~stream.worker.state_cache.ModelStates` over a plain dict as the
table, with ``state_cache_models`` live states (default 200) as the worker
keeps them. After every model's envelope its state is encoded and stored,
as a checkpoint does, and freed memory is handed back after each round, as
the worker does every few seconds. No broker, no Faust, no label join, no held
records: what the worker holds beyond these figures is theirs.

Prints, as one JSON object: ``rss_mb_start`` (the process with its imports,
before any model), ``rss_mb_by_round`` and ``rss_mb_end``, and
``table_mb`` (the stored states' bytes).
"""

from __future__ import annotations

import argparse
import json

import orjson
import psutil

from bench.steady import EVENTS_PER_MODEL, rounds
from stream.settings import Settings
from stream.worker.memory_release import give_large_blocks_their_own_pages, release_free_memory
from stream.worker.state_cache import ModelStates
from stream.worker.state_codec import encode_state


def measure(models: int, live: int, per_model: int) -> dict:
    give_large_blocks_their_own_pages()
    process = psutil.Process()
    table: dict[bytes, bytes] = {}
    states = ModelStates(table, Settings().detection, max_models=live)
    names = [f"m{i}" for i in range(models)]
    out: dict = {"rss_mb_start": round(process.memory_info().rss / 2**20, 1), "rss_mb_by_round": []}
    for envelopes, _ in rounds(names, 1_800_000_000.0, per_model=per_model, labels_on=False):
        for key, blob in envelopes:
            model = key.decode()
            events = orjson.loads(blob)["events"]
            monitor = states.get(model)
            monitor.process(events, arrived_at=events[-1]["timestamp"])
            stored = table[key] = encode_state(monitor.to_dict())
            states.put(model, monitor, stored)
        del envelopes
        release_free_memory()
        out["rss_mb_by_round"].append(round(process.memory_info().rss / 2**20, 1))
    out["rss_mb_end"] = out["rss_mb_by_round"][-1]
    out["table_mb"] = round(sum(map(len, table.values())) / 2**20, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--live", type=int, default=Settings().state_cache_models, help="state_cache_models")
    parser.add_argument("--events-per-model", type=int, default=EVENTS_PER_MODEL)
    args = parser.parse_args()
    print(json.dumps(measure(args.models, args.live, args.events_per_model)))


if __name__ == "__main__":
    main()

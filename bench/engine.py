"""The detection engine alone, without Kafka: ``python -m bench.engine [--events N] [--profile]``.

Feeds events of :mod:`bench.throughput`'s workload (10 models, 10 numeric
features, confidence and prediction; default 200,000 events over 50 minutes of
event time, where ``bench.throughput`` spreads its events over 10: ``--span-s
600`` gives each model as many a second as its ``--events 200000``) to one
:class:`~stream.monitoring.model_monitor.ModelMonitor` per model, in envelopes
of 500 events of one model (``--batch``), in event-time order, with the default
monitor set and a reference learnt from each model's first events.
Prints the events per second of ``ModelMonitor.process`` over the best of
``--repeats`` runs (the work a worker does per event, minus decoding, Kafka
and checkpoints), and the alerts raised; with ``--profile``, the functions
holding most of the time (cProfile, cumulative; slower). It runs with the
allocator setting the worker makes (:func:`as_in_the_worker`).

This is the figure to compare a change of the hot path against on one
machine: the worker's own rate (``bench.throughput``) adds Kafka and Faust
and takes minutes.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time

from bench.workload import ENVELOPE, FEATURES, MODELS, make_events
from stream.monitoring.model_monitor import ModelMonitor
from stream.settings.runtime import Settings
from stream.worker.memory_release import give_large_blocks_their_own_pages


def envelopes(n: int, size: int = ENVELOPE, span_s: float = 3_000.0) -> list[tuple[str, list[dict]]]:
    """The events of :mod:`bench.throughput` as (model, batch of ``size``) pairs in event-time order."""
    events = make_events(n, MODELS, FEATURES, 1_800_000_000.0, span_s)
    by_model: dict[str, list[dict]] = {}
    for event in events:
        by_model.setdefault(event["model"], []).append(event)
    batches = [(m, evs[i : i + size]) for m, evs in by_model.items() for i in range(0, len(evs), size)]
    batches.sort(key=lambda b: b[1][0]["timestamp"])
    return batches


def as_in_the_worker() -> None:
    """The allocator setting the worker makes at start (see stream.worker.memory_release).

    Arrays past its threshold come as fresh pages, each touched a fault: a
    change that builds larger arrays can be faster here without it and
    slower in the worker.
    """
    give_large_blocks_their_own_pages()


def run(batches: list[tuple[str, list[dict]]], profile: cProfile.Profile | None = None) -> tuple[float, int]:
    """Seconds to process ``batches`` with fresh monitors, and the alerts raised."""
    # The bench's events span 50 minutes: a reference needs its events, not five minutes of them.
    detection = Settings.from_env({"STREAM_MONITOR_REFERENCE_MIN_S": "0"}).detection
    monitors = {model: ModelMonitor(model, detection) for model in dict.fromkeys(model for model, _ in batches)}
    alerts = 0
    started = time.perf_counter()
    if profile is not None:
        profile.enable()
    for model, batch in batches:
        alerts += len(monitors[model].process(batch, arrived_at=batch[-1]["timestamp"]))
    if profile is not None:
        profile.disable()
    return time.perf_counter() - started, alerts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--batch", type=int, default=ENVELOPE, help="events per call (a worker on single-event records gets a few)"
    )
    parser.add_argument(
        "--span-s",
        type=float,
        default=3_000.0,
        help="event time the events span (the default, 50 minutes, gives each model 7 events a second)",
    )
    parser.add_argument("--profile", action="store_true", help="also print the top functions (cProfile)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    as_in_the_worker()
    batches = envelopes(args.events, args.batch, args.span_s)
    timings = [run(batches) for _ in range(args.repeats)]
    best = min(seconds for seconds, _ in timings)
    result = {"engine_events_per_s": round(args.events / best), "alerts": timings[0][1], "runs": args.repeats}
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"engine: {result['engine_events_per_s']:,} events/s (best of {args.repeats} runs of "
            f"{args.events:,} events); {result['alerts']} alerts"
        )
    if args.profile:
        profile = cProfile.Profile()
        run(batches, profile)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()

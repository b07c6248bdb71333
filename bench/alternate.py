"""The worker's two throughput phases for several checkouts, alternated: ``python -m bench.alternate DIR DIR ...``.

Loads the events of :mod:`bench.throughput` once into the embedded broker,
as SDK envelopes and as one event per record, then runs a worker from each
checkout in turn on each (``--rounds`` times) and prints one JSON line per
run: ``events_per_s`` and ``single_record_events_per_s``, as
``bench.throughput`` measures them (``--budget-s`` of work after the first
event), and the worker's CPU time per event over the same window, which
varies less than the rates. A worker runs the code of the folder it starts in
(:class:`~stream.worker.child_process.WorkerProcess` starts
``python -m stream.tools.cli`` there), so the checkouts are compared on the
same records, one run after the other: this machine's speed varies between
runs of the same code by more than most changes are worth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import Progress

from bench.workload import (
    ENVELOPE,
    FEATURES,
    MODELS,
    PARTITIONS,
    as_envelopes,
    make_events,
    produce,
    run_worker,
    topics_env,
)
from stream.kafka.embedded_broker import EmbeddedBroker
from stream.kafka.topics import TopicSpec, ensure_topics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path, help="folders holding a checkout of stream-monitor")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=15.0)
    parser.add_argument(
        "--phase", choices=("both", "envelopes", "single"), default="both", help="run one phase only (both by default)"
    )
    args = parser.parse_args()
    checkouts = [checkout.resolve() for checkout in args.checkouts]
    missing = [str(c) for c in checkouts if not (c / "stream" / "tools" / "cli.py").is_file()]
    if missing:
        parser.error(f"not a checkout of stream-monitor: {', '.join(missing)}")
    console = Console(stderr=True)
    with EmbeddedBroker() as broker, Progress(console=console, transient=True) as progress:
        servers = broker.bootstrap_servers
        events = make_events(args.events, MODELS, FEATURES, time.time() - 700, 600.0)
        topics = {"envelopes": f"env-{uuid.uuid4().hex[:8]}", "single": f"single-{uuid.uuid4().hex[:8]}"}
        asyncio.run(ensure_topics(servers, [TopicSpec(topic, PARTITIONS, "") for topic in topics.values()]))
        if args.phase != "single":
            asyncio.run(produce(servers, topics["envelopes"], as_envelopes(events, ENVELOPE), progress, "envelopes"))
        if args.phase != "envelopes":
            singles = [(e["model"].encode(), orjson.dumps(e)) for e in events]
            asyncio.run(produce(servers, topics["single"], singles, progress, "single-event records"))
        del events
        phases = [
            (key, phase)
            for key, phase in (("events_per_s", "envelopes"), ("single_record_events_per_s", "single"))
            if args.phase in ("both", phase)
        ]
        for round_ in range(args.rounds):
            for checkout in checkouts:
                os.chdir(checkout)
                rates = {}
                for key, phase in phases:
                    run = run_worker(broker, topics_env(topics[phase]), args.events, progress, phase, args.budget_s)
                    rates[key] = round(run.events_per_s)
                    rates[f"{phase}_cpu_us_per_event"] = round(run.cpu_us_per_event, 1)
                print(json.dumps({"round": round_, "checkout": str(checkout), **rates}), flush=True)


if __name__ == "__main__":
    main()

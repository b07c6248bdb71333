"""A flame graph of the worker under load: ``python -m bench.flame [--events N] [--single] [--svg PATH]``.

Loads the events of :mod:`bench.throughput` (SDK envelopes, or one event per
record with ``--single``) into the embedded broker, starts a worker on them
and records it with py-spy for ``--seconds`` while it works through the
backlog. Writes the SVG and prints the functions that hold the most samples
(inclusive), so that the figure and its reading come from one command.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.workload import FEATURES, MODELS, PARTITIONS, as_envelopes, make_events, produce, topics_env
from stream.kafka.embedded_broker import EmbeddedBroker
from stream.kafka.topics import TopicSpec, ensure_topics
from stream.worker.child_process import WorkerProcess


def record(pid: int, seconds: float, out: Path, fmt: str) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    options = ["--duration", str(int(seconds)), "--rate", "100", "--format", fmt, "--output", str(out)]
    subprocess.run(
        [py_spy, "record", "--pid", str(pid), "--nonblocking", *options],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def hottest(raw: Path, top: int) -> tuple[int, list[tuple[str, float]]]:
    """Samples in all, and the ``top`` frames by the share of samples they appear in."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            # The event loop and the command line wrap everything; they say nothing.
            if "stream/" in frame and "cli" not in frame and "run.py" not in frame:
                inclusive[frame] += n
    return total, [(frame, n / total) for frame, n in inclusive.most_common(top)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--single", action="store_true", help="one event per record instead of envelopes")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--svg", type=Path, default=Path("worker-flame.svg"))
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    console = Console(stderr=True)
    with EmbeddedBroker() as broker, Progress(console=console, transient=True) as progress:
        servers = broker.bootstrap_servers
        events = make_events(args.events, MODELS, FEATURES, time.time() - 700, 600.0)
        topic = f"flame-{uuid.uuid4().hex[:8]}"
        asyncio.run(ensure_topics(servers, [TopicSpec(topic, PARTITIONS, "")]))
        records = [(e["model"].encode(), orjson.dumps(e)) for e in events] if args.single else as_envelopes(events, 500)
        asyncio.run(produce(servers, topic, records, progress, "events"))
        del events, records
        worker = WorkerProcess(broker.url, app_id=f"bench-{uuid.uuid4().hex[:8]}", env=topics_env(topic)).start()
        try:
            while not (worker.health() or {}).get("events"):
                time.sleep(0.05)
            raw = Path(tempfile.mkdtemp()) / "worker.txt"
            started, before = time.perf_counter(), (worker.health() or {}).get("events", 0)
            record(worker.pid, min(args.seconds, 10), raw, "raw")
            record(worker.pid, args.seconds, args.svg, "flamegraph")
            done = (worker.health() or {}).get("events", 0)
            # A worker that ran out of events idled for part of the time: its rate would be too low.
            rate = None if done >= args.events else (done - before) / (time.perf_counter() - started)
            if rate is None:
                console.print("[yellow]the backlog ran out while recording: raise --events")
        finally:
            worker.kill()
    total, frames = hottest(raw, args.top)
    table = Table(title=f"worker on {'single-event records' if args.single else 'envelopes'}: {total} samples")
    table.add_column("share", justify="right")
    table.add_column("function (inclusive)")
    for frame, share in frames:
        table.add_row(f"{100 * share:.1f} %", frame)
    Console().print(table)
    shown = "no rate (the backlog ran out)" if rate is None else f"{rate:,.0f} events/s while recorded"
    Console().print(f"flame graph: {args.svg}; {shown}")


if __name__ == "__main__":
    main()

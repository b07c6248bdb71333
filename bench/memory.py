"""Memory per monitored model: ``python -m bench.memory``.

Feeds N events (default 1,000,000) spread over M models (default 1,000) with
F numeric and categorical features each (default 10) through the same
per-model state the worker keeps, across ten minutes of event time so every
pane of the hopping window is filled, and prints:

- ``rss_mb``: resident memory of the process after the run;
- ``state_mb``: growth of resident memory while the states were built
  (with ``--tracemalloc``: the Python heap they hold, exactly, but slower);
- ``kb_per_model``: state_mb per model;
- ``changelog_kb_per_model``: what a model's table entry writes to its
  changelog (compressed JSON, as the worker writes it);
- ``events_per_s``: how fast the pure state update ran (no Kafka).

It measures the state objects only (no broker, no Faust), which is what grows
with the number of models.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
import tracemalloc

import numpy as np
import psutil
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from stream.monitoring.model_monitor import ModelMonitor
from stream.settings import Settings
from stream.worker.state_codec import encode_state


def make_batch(rng: np.random.Generator, model: str, n: int, t0: float, features: int) -> list[dict]:
    latency = rng.lognormal(3, 0.3, n)
    values = rng.normal(100, 15, (n, features))
    cats = rng.integers(0, 8, (n, features))
    out = []
    for i in range(n):
        f: dict[str, object] = {}
        for j in range(features):
            f[f"f{j}"] = float(values[i, j]) if j % 2 == 0 else f"c{cats[i, j]}"
        out.append(
            {
                "model": model,
                "model_version": "1",
                "timestamp": t0 + i * 600.0 / n,
                "latency_ms": float(latency[i]),
                "prediction": int(i % 2),
                "confidence": 0.8,
                "features": f,
            }
        )
    return out


def run(events: int, models: int, features: int, batch: int, trace: bool = False) -> dict[str, float]:
    settings = Settings()
    rng = np.random.default_rng(0)
    per_model = events // models
    gc.collect()
    process = psutil.Process(os.getpid())
    if trace:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0] if trace else process.memory_info().rss
    monitors = {f"model-{i:04d}": ModelMonitor(f"model-{i:04d}", settings.detection) for i in range(models)}
    t0 = time.time() - 600
    started = time.perf_counter()
    done = 0
    with Progress(transient=True) as progress:
        task = progress.add_task("feeding events", total=per_model * models)
        for start in range(0, per_model, batch):
            n = min(batch, per_model - start)
            for name, monitor in monitors.items():
                # Event times advance with the batch, as live traffic would.
                monitor.process(make_batch(rng, name, n, t0 + start * 600.0 / per_model, features))
                done += n
            progress.update(task, completed=done)
    elapsed = time.perf_counter() - started
    gc.collect()
    if trace:
        state = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
    else:
        state = process.memory_info().rss - base
    sample = list(monitors.values())[: min(20, models)]
    changelog = np.mean([len(encode_state(m.to_dict())) for m in sample])
    return {
        "events": done,
        "models": models,
        "features": features,
        "rss_mb": process.memory_info().rss / 2**20,
        "state_mb": state / 2**20,
        "kb_per_model": state / models / 1024,
        "changelog_kb_per_model": changelog / 1024,
        "events_per_s": done / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100, help="events per model per update (an SDK envelope)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tracemalloc", action="store_true", help="measure the heap exactly (slower)")
    args = parser.parse_args()
    result = run(args.events, args.models, args.features, args.batch, args.tracemalloc)
    if args.json:
        print(json.dumps(result))
        return
    table = Table(
        title=f"memory per model ({args.models:,} models x {args.features} features, {result['events']:,} events)"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:,.1f}" if isinstance(value, float) else f"{value:,}")
    Console().print(table)


if __name__ == "__main__":
    main()

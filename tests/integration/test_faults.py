"""Faults inflicted on a real worker and broker: crashes, rebalances, outages, poison, overload.

Every test checks the same promise: each event produced is counted exactly
once in the model's statistics, or sits on the dead-letter topic with a
reason; and the worker is still running at the end. Each test adds a row to
the fault table printed after the run.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import numpy as np

from stream.client import make_event

from .conftest import isolated_settings
from .faults import FaultRow, report
from .helpers import publish, wait_for_events


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def model_events(model: str, n: int, t0: float, seed: int, spike: range | None = None) -> list[dict]:
    rng = np.random.default_rng(seed)
    latency = rng.lognormal(3, 0.2, n)
    out = []
    for i in range(n):
        slow = spike is not None and i in spike
        out.append(
            make_event(
                model,
                "1",
                2_000.0 + i % 7 if slow else float(latency[i]),
                i % 2,
                timestamp=t0 + i * 0.01,
                event_id=f"{model}-{seed}-{i}",
                features={"amount": float(rng.normal(100, 15))},
            )
        )
    return out


def counted(worker, models) -> dict[str, int]:
    """Events in each model's statistics, 0 for a model the worker does not know (yet)."""
    out = {}
    for model in models:
        try:
            stats = get_json(f"{worker.url}/models/{model}/stats?window=hopping")
        except (urllib.error.HTTPError, OSError):
            out[model] = 0
            continue
        out[model] = sum(v["events"] for v in stats["versions"].values())
    return out


def wait_for_counts(worker, expected: dict[str, int], timeout_s: float = 120.0, settle_s: float = 3.0) -> dict:
    """Counts once every model reached its expected number and nothing more arrived for ``settle_s``."""
    deadline = time.monotonic() + timeout_s
    seen = counted(worker, expected)
    while any(seen[m] < n for m, n in expected.items()):
        if time.monotonic() > deadline:
            raise AssertionError(f"counts {seen}, expected {expected}; worker log:\n{worker.log_tail()}")
        time.sleep(0.5)
        seen = counted(worker, expected)
    time.sleep(settle_s)  # duplicates, if any, would show up now
    return counted(worker, expected)


def test_sigkill_mid_stream_loses_no_event_and_counts_none_twice(broker):
    iso = isolated_settings(broker)
    models = {"alpha": 4000, "beta": 4000, "gamma": 4000}
    t0 = time.time() - 60
    events = [e for seed, (m, n) in enumerate(models.items()) for e in model_events(m, n, t0, seed)]
    worker = iso.worker()
    worker.start()
    try:
        # Small envelopes: hundreds of records in flight when the worker dies.
        asyncio.run(publish(iso, events, batch_size=10))
        before = wait_for_events(worker, 3000)
        assert before["events"] < len(events), "the worker finished before the kill; produce more"
        assert worker.kill() == -9
    finally:
        worker.stop()
    worker = iso.worker()
    worker.start(ready_timeout_s=120)
    try:
        seen = wait_for_counts(worker, models)
        health = worker.health()
        assert seen == models
        # The restarted worker re-read records the dead one had applied but not
        # committed, and recognised each from the offset saved in the state.
        report(
            FaultRow(
                "worker SIGKILL mid-stream",
                f"3 models, {len(events)} events in envelopes of 10; SIGKILL after {before['events']}; restart",
                len(events),
                sum(seen.values()),
                sum(seen.values()) - len(events),
                health["dead_letters"],
                f"exact; {health['replayed']} replayed records recognised and skipped",
            )
        )
        assert health["dead_letters"] == 0
    finally:
        worker.stop()

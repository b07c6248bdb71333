"""Faults inflicted on a real worker and broker: crashes, rebalances, outages, poison, overload.

Every test checks the same promise: each event produced is counted exactly
once in the model's statistics, or sits on the dead-letter topic with a
reason; and the worker is still running at the end. Each test adds a row to
the fault table printed after the run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.error
import urllib.request

import numpy as np

from stream.client import make_event
from stream.follow import read_all

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


POISON_MONITORS = """
[defaults.signals.latency_ms]
detectors = ["zscore", "tests.poison_detector:PoisonRule"]
"""


def test_a_record_that_makes_a_detector_raise_is_dead_lettered_and_undone(broker, tmp_path):
    iso = isolated_settings(broker)
    monitors = tmp_path / "monitors.toml"
    monitors.write_text(POISON_MONITORS)
    t0 = time.time() - 60
    events = model_events("poisoned", 600, t0, 7)
    poison_at = (50, 130, 599)
    for i in poison_at:
        events[i]["latency_ms"] = 666.0  # PoisonRule raises ValueError on this value
    worker = iso.worker(env_extra={"STREAM_MONITOR_MONITORS_FILE": str(monitors)})
    worker.start()
    try:
        # Envelopes of 100 for the first 500, then one record per event.
        asyncio.run(publish(iso, events[:500], batch_size=100))
        asyncio.run(publish(iso, events[500:], batch_size=1))
        expected = {"poisoned": len(events) - len(poison_at)}
        seen = wait_for_counts(worker, expected)
        assert seen == expected
        stats = get_json(f"{worker.url}/models/poisoned/stats?window=hopping")["versions"]["1"]
        # The window update ran before the detector raised; the saved state must not show it.
        assert stats["window"]["count"] == expected["poisoned"]
        assert stats["window"]["latency_ms"]["max"] < 666.0
        letters = [
            json.loads(r.value)
            for r in asyncio.run(read_all(broker.bootstrap_servers, iso.settings.topics.deadletter, expect=3))
        ]
        assert len(letters) == len(poison_at)
        assert all(letter["error_type"] == "processing_error" for letter in letters)
        assert all("ValueError: poisoned value 666.0" in letter["reason"] for letter in letters)
        # An event rejected out of a batch is written alone; a one-event record as it came.
        values = [json.loads(base64.b64decode(letter["value_b64"])) for letter in letters]
        rejected = sorted(v["events"][0]["event_id"] if "events" in v else v["event_id"] for v in values)
        assert rejected == sorted(events[i]["event_id"] for i in poison_at)
        health = worker.health()
        assert health["dead_letters"] == len(poison_at)
        report(
            FaultRow(
                "detector raises on one event",
                "a plugged-in detector raises on latency 666: twice inside envelopes of 100, once alone",
                len(events),
                seen["poisoned"],
                0,
                len(letters),
                "only the 3 poisoned events dead-lettered with ValueError; window count excludes them",
            )
        )
    finally:
        worker.stop()

"""Segments end to end: an incident in one segment of five is named, ranked first, and no quiet segment is blamed."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import numpy as np
import orjson
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from stream.contracts.schemas import validate
from stream.kafka.follow import read_all
from stream.sdk.client import make_event
from stream.tools.cli_read import stats

from .conftest import isolated_settings
from .helpers import publish, wait_for_events

SEGMENTS = ("eu", "us", "asia", "latam", "africa")


def traffic(t0: float, n: int, rng: np.random.Generator) -> list[dict]:
    latency = rng.lognormal(np.log(20.0), 0.15, n)
    return [
        make_event("shop", "1", float(latency[i]), i % 2, timestamp=t0 + i * 0.05, segment=SEGMENTS[i % 5])
        for i in range(n)
    ]


def window_start(t: float) -> float:
    """Just after the start of the 60 s window holding ``t``."""
    return t - t % 60 + 1.0


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


async def alerts_until(iso, expect, timeout_s: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    found: list[dict] = []
    while time.monotonic() < deadline:
        records = await read_all(iso.settings.bootstrap_servers, iso.settings.topics.alerts, timeout_s=2)
        found = [orjson.loads(r.value) for r in records]
        if expect(found):
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"alerts never matched: {[(a['signal'], a.get('segment')) for a in found]}")


def test_a_latency_incident_in_one_segment_of_five_is_named_and_ranked_first(broker):
    iso = isolated_settings(broker, zscore_warmup=100)
    worker = iso.worker().start()
    try:
        rng = np.random.default_rng(5)
        # The incident's 20 s lie in one tumbling window, so that no segment's window is cut small.
        t1 = window_start(time.time() - 90)
        t0 = t1 - 200
        normal = traffic(t0, 4_000, rng)  # 200 s, 800 events per segment
        spike = [make_event("shop", "1", 900.0 + i, 0, timestamp=t1 + i * 0.1, segment="asia") for i in range(40)]
        around = traffic(t1, 400, rng)
        # Three events of a segment of three people: never exported raw.
        tiny = [make_event("shop", "1", 25.0, 0, timestamp=t1 + 1 + i, segment="tiny") for i in range(3)]
        incident = sorted(spike + around + tiny, key=lambda e: e["timestamp"])
        asyncio.run(publish(iso, normal + incident))
        wait_for_events(worker, len(normal) + len(incident))

        def seen(alerts):
            model_wide = [a for a in alerts if a["signal"] == "latency_ms" and "segment" not in a]
            segment = [a for a in alerts if a.get("segment") == "asia" and a["signal"] == "latency_ms"]
            return bool(model_wide and segment)

        alerts = asyncio.run(alerts_until(iso, seen))
        for alert in alerts:
            validate("alert", alert)
        # Only the segment in trouble has alerts of its own.
        assert {a.get("segment") for a in alerts if "segment" in a} == {"asia"}
        model_wide = [
            a for a in alerts if a["signal"] == "latency_ms" and "segment" not in a and a["status"] == "firing"
        ]
        for alert in model_wide:
            drivers = alert["evidence"]["segments"]
            assert drivers and drivers[0]["segment"] == "asia", drivers
            # No quiet segment is named as a driver.
            assert [d["segment"] for d in drivers] == ["asia"]
            assert drivers[0]["share"] > 0.9 and drivers[0]["now"] > 2 * drivers[0]["usual"]

        page = json.loads(get(f"{worker.url}/models/shop/segments"))
        segments = page["versions"]["1"]
        assert set(segments) == {*SEGMENTS, "tiny"} and page["max_segments"] == 20
        assert segments["asia"]["firing"] == ["latency_ms"]
        assert all(segments[s]["firing"] == [] for s in SEGMENTS if s != "asia")
        # The slice of three is suppressed: no figure at all, not even its count.
        assert segments["tiny"] == {"suppressed": True, "reason": "fewer than 20 events in the window"}

        metrics = get(f"{worker.url}/metrics")
        series = {
            s.labels["segment"]
            for family in text_string_to_metric_families(metrics)
            for s in family.samples
            if s.name == "stream_monitor_segment_window_events"
        }
        assert "asia" in series and "tiny" not in series

        result = CliRunner(env={"COLUMNS": "200"}).invoke(stats, ["shop", "--segments", "--url", worker.url])
        assert result.exit_code == 0, result.output
        rows = [line for line in result.output.splitlines() if "asia" in line or "tiny" in line]
        assert any("latency_ms" in r for r in rows if "asia" in r)
        assert any("fewer than 20 events" in r for r in rows if "tiny" in r)
    finally:
        worker.stop()


def test_with_noise_set_segments_leave_the_worker_as_noisy_counts_only(broker):
    iso = isolated_settings(broker)
    env = {"STREAM_MONITOR_SLICE_NOISE_EPSILON": "1", "STREAM_MONITOR_SLICE_NOISE_BUDGET": "100"}
    worker = iso.worker(env_extra=env).start()
    try:
        normal = traffic(window_start(time.time() - 100), 1_000, np.random.default_rng(6))  # 50 s of one window
        asyncio.run(publish(iso, normal))
        wait_for_events(worker, len(normal))
        page = json.loads(get(f"{worker.url}/models/shop/segments"))
        assert page["noise"]["mechanism"] == "discrete Laplace (OpenDP)" and page["noise"]["epsilon_per_window"] == 1
        for name in SEGMENTS:
            segment = page["versions"]["1"][name]
            assert segment["noisy"] and set(segment["window"]) == {"start", "end", "count", "error_rate"}
        # Read again: the same draw, not a fresh one (which would spend the budget again).
        assert json.loads(get(f"{worker.url}/models/shop/segments"))["versions"] == page["versions"]
        names = {s.name for f in text_string_to_metric_families(get(f"{worker.url}/metrics")) for s in f.samples}
        assert "stream_monitor_segment_window_events" in names
        assert "stream_monitor_segment_window_latency_seconds" not in names
    finally:
        worker.stop()

"""The live status page in headless Chromium during an injected incident.

Chromium comes from Debian's ``chromium`` package; the test installs it with
apt-get when it is missing and skips, saying why, only where that cannot be
done. The screenshot is saved as ``artifacts/live-page.png``.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from pathlib import Path

import pytest

from stream.sdk.client import make_event
from stream.stats.window_stats import window_start
from tests.debian import debian_program

from .conftest import isolated_settings
from .helpers import publish, wait_for_events

ARTIFACTS = Path(__file__).parents[2] / "artifacts"
# Without the background-networking flags Chromium keeps trying hosts this closed network refuses.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    return debian_program("chromium", "chromium")


def browse(chromium: str, url: str, profile: Path, *args: str) -> str:
    result = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *args, url], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_live_page_shows_the_incident_and_the_charts(broker, chromium, tmp_path):
    iso = isolated_settings(broker, zscore_warmup=100)
    worker = iso.worker().start()
    try:
        # The spike lands 40 s into its tumbling window, so that window also holds 200 events of
        # the quiet segment: one with fewer than min_slice_events (20) is suppressed from the page.
        # Where the minute fell had decided that (the test failed when it fell just before the spike).
        t0 = window_start(time.time() - 60, iso.settings.detection.window_s) + 40 - 190
        normal = [
            make_event(
                "checkout-ranker",
                "4",
                20.0 + i % 5,
                i % 2,
                timestamp=t0 + i * 0.1,
                features={"x": i % 9},
                segment=("web", "app")[i % 2],
            )
            for i in range(1900)
        ]
        spike = [
            make_event(
                "checkout-ranker", "4", 900.0 + i, 0, timestamp=t0 + 190 + i * 0.01, features={"x": 1}, segment="app"
            )
            for i in range(20)
        ]
        quiet = [make_event("quiet-model", "1", 15.0, 0, timestamp=t0 + i * 0.5) for i in range(300)]
        asyncio.run(publish(iso, normal + spike + quiet))
        wait_for_events(worker, len(normal) + len(spike) + len(quiet))
        time.sleep(0.5)
        dom = browse(chromium, worker.url + "/", tmp_path / "profile", "--dump-dom")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "live-page.png"
        shot.unlink(missing_ok=True)
        browse(chromium, worker.url + "/", tmp_path / "profile", "--window-size=1280,900", f"--screenshot={shot}")
    finally:
        worker.stop()

    assert 'data-loaded="true"' in dom, "the page's script never rendered the status"
    assert '<div class="card critical" data-model="checkout-ranker" data-health="critical">' in dom
    assert '<div class="card ok" data-model="quiet-model" data-health="ok">' in dom
    assert "2 models: 1 ok, 0 warning, 1 critical" in dom
    rows = re.findall(r'<tr class="alert firing".*?</tr>', dom, flags=re.S)
    latency = [r for r in rows if "latency_ms (zscore)" in r]
    assert latency and "critical" in latency[0] and "firing" in latency[0]
    card = dom[dom.index('data-model="checkout-ranker"') :]
    # The detectors that agree about the latency are one incident: one line, naming them.
    incident = re.search(
        r'<li data-incident="[0-9a-f]{32}" class="sev-critical">critical: latency_ms \(([a-z_, ]+), since', card
    )
    assert incident and "zscore" in incident.group(1).split(", ")
    # The slice in trouble is marked, and named in its own incident line; the other is not.
    assert re.search(r'<tr data-segment="app" class="segment-firing">.*?latency_ms', card, flags=re.S)
    assert re.search(r'<tr data-segment="web" class="">', card)
    assert re.search(r'class="sev-critical">critical: latency_ms in app \(', card)
    for name in ("latency", "errors", "drift"):
        svg = re.search(rf'<svg class="chart chart-{name}".*?</svg>', card, flags=re.S)
        assert svg, f"no {name} chart"
        points = re.findall(r'points="([^"]+)"', svg.group(0))
        assert points and len(points[0].split()) >= 3, f"{name} chart has no line over the last windows"
    # The latency chart says which line is which, and its label is the card's p95.
    legend = re.search(r'<div class="legend">(.*?)</div>', card, flags=re.S)
    assert legend and re.findall(r'class="key (p\d\d)"', legend.group(1)) == ["p50", "p95", "p99"]
    assert re.search(r"<text[^>]*>latency p95: ", card)
    # Drift is drawn to at least PSI 0.25, so a small drift looks small on every card.
    drift_label = re.search(r"<text[^>]*>drift: [^<]*\(scale ([0-9.]+)\)</text>", card)
    assert drift_label and float(drift_label.group(1)) >= 0.25
    assert shot.stat().st_size > 10_000, "the screenshot is empty"

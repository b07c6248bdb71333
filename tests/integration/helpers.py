"""Small helpers the integration tests share: publishing and waiting on a worker."""

from __future__ import annotations

import time
from typing import Any

from stream.sdk.client import MonitorClient


async def publish(iso: Any, events: list[dict[str, Any]], batch_size: int = 100, protection: Any = None) -> None:
    """Send ``events`` through the SDK to the isolated events topic; all must be acknowledged."""
    client = MonitorClient(
        iso.settings.broker, topic=iso.settings.topics.events, batch_size=batch_size, protection=protection
    )
    await client.start()
    for event in events:
        assert client.record_event(event)
    # The SDK's default 10 s to flush at close is for an application shutting down; a test that
    # publishes thousands of envelopes to a broker shared with the suite has been seen to need more.
    await client.close(timeout_s=120)
    assert client.stats.sent == len(events), client.stats


def wait_for_events(worker: Any, n: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """The worker's health once it has processed at least ``n`` events."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = worker.health()
        if health and health["events"] >= n:
            return health
        time.sleep(0.1)
    raise AssertionError(f"worker reached {worker.health()}, expected {n} events")

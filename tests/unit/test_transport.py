"""The worker's Kafka consumer is built with the short fetch wait (Faust's own is 1.5 s)."""

import asyncio

from stream.app import MonitorApp
from stream.config import Settings
from stream.transport import FETCH_MAX_WAIT_MS


def test_the_worker_consumer_waits_at_most_the_short_fetch_wait(tmp_path):
    async def build():
        mon = MonitorApp(Settings(data_dir=str(tmp_path)))
        consumer = mon.app.consumer._thread._create_worker_consumer(mon.app.transport)
        return consumer._fetch_max_wait_ms

    assert FETCH_MAX_WAIT_MS < 1500
    assert asyncio.run(build()) == FETCH_MAX_WAIT_MS

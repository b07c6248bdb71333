"""Integration fixtures: real Kafka-protocol brokers, one of each kind per test session.

Every test that takes ``broker`` runs on two independent implementations of
the protocol: Tansu (the embedded broker users get) and librdkafka's mock
cluster (see :mod:`tests.integration.librdkafka_mock`), so that what a test
proves does not rest on one broker's quirks. ``STREAM_MONITOR_TEST_BROKERS``
(comma-separated ``tansu``, ``librdkafka``) narrows the run.

Each test gets its own topic names and app id, so tests never see each
other's records and every worker joins a fresh consumer group (rejoining an
old group is slow on Tansu).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from stream.kafka.embedded_broker import EmbeddedBroker
from stream.kafka.topics import required_topics
from stream.settings import Settings
from stream.worker.child_process import WorkerProcess

from .librdkafka_mock import LibrdkafkaMock

BROKERS = {"tansu": EmbeddedBroker, "librdkafka": LibrdkafkaMock}


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", params=os.environ.get("STREAM_MONITOR_TEST_BROKERS", ",".join(BROKERS)).split(","))
def broker(request) -> Iterator[EmbeddedBroker | LibrdkafkaMock]:
    with BROKERS[request.param]() as running:
        yield running


@dataclass
class Isolated:
    """Settings with unique topic names, and the environment that passes them on."""

    settings: Settings

    @property
    def env(self) -> dict[str, str]:
        t = self.settings.topics
        return {
            "STREAM_MONITOR_TOPIC_EVENTS": t.events,
            "STREAM_MONITOR_TOPIC_LABELS": t.labels,
            "STREAM_MONITOR_TOPIC_ALERTS": t.alerts,
            "STREAM_MONITOR_TOPIC_DEADLETTER": t.deadletter,
            "STREAM_MONITOR_TOPIC_RETRAIN": t.retrain,
            "STREAM_MONITOR_PARTITIONS": str(self.settings.partitions),
            "STREAM_MONITOR_ZSCORE_WARMUP": str(self.settings.detection.zscore_warmup),
            # Tests send seconds of event time: their references are learnt from events, not minutes.
            "STREAM_MONITOR_REFERENCE_MIN_S": "0",
        }

    def worker(self, env_extra: dict[str, str] | None = None, **kwargs) -> WorkerProcess:
        env = {**self.env, **(env_extra or {})}
        return WorkerProcess(self.settings.broker, app_id=self.settings.app_id, env=env, **kwargs)


def isolated_settings(broker: EmbeddedBroker, **overrides) -> Isolated:
    suffix = uuid.uuid4().hex[:8]
    topics = {f"topic_{name}": f"{name}-{suffix}" for name in ("events", "labels", "alerts", "deadletter", "retrain")}
    # Detection settings (window_s, zscore_warmup, ...) are named like the others, as on the command line.
    settings = Settings.from_env({}, broker=broker.url, app_id=f"test-{suffix}", **topics, **overrides)
    if isinstance(broker, LibrdkafkaMock):
        broker.create_topics(required_topics(settings))  # its clients cannot
    return Isolated(settings)


@pytest.fixture(scope="session")
def tansu() -> Iterator[EmbeddedBroker]:
    """Tansu alone, for tests where a second worker joins the group: on librdkafka's mock cluster
    the joining member was sometimes given no partition, or never became ready (1 run in 3)."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def isolated(broker) -> Isolated:
    return isolated_settings(broker)


def pytest_terminal_summary(terminalreporter):
    from tests.integration.faults import FAULT_ROWS

    if not FAULT_ROWS:
        return
    tr = terminalreporter
    tr.section("faults inflicted")
    tr.write_line("| fault | broker | what the test did | produced | counted | duplicates | dead letters | result |")
    tr.write_line("|---|---|---|---|---|---|---|---|")
    for r in FAULT_ROWS:
        tr.write_line(
            f"| {r.fault} | {r.broker} | {r.action} | {r.produced} | {r.counted} | {r.duplicates} | "
            f"{r.dead_letters} | {r.result} |"
        )

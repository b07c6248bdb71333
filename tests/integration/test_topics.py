"""Every topic is created with its declared partitions; a mismatch stops the worker; a broker
that will not create topics gets a one-line error naming what to create.

Creating topics needs a broker that names a controller: these tests run on Tansu only;
librdkafka's mock cluster names none, which is the last test's subject.
"""

import asyncio
import os
import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream.kafka.embedded_broker import EmbeddedBroker, free_port
from stream.kafka.topics import TopicMismatch, ensure_topics, required_topics

from .conftest import isolated_settings
from .librdkafka_mock import LibrdkafkaMock


@pytest.fixture(scope="module")
def broker():
    with EmbeddedBroker() as tansu:
        yield tansu


async def partition_counts(bootstrap, names):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
        return {d["topic"]: len(d["partitions"]) for d in described}
    finally:
        await admin.close()


async def test_creates_every_topic_with_its_partitions_then_accepts_them(broker):
    iso = isolated_settings(broker, partitions=3)
    specs = required_topics(iso.settings)
    first = await ensure_topics(broker.bootstrap_servers, specs)
    assert set(first.values()) == {"created"}
    assert f"{iso.settings.app_id}-model-state-changelog" in first
    counts = await partition_counts(broker.bootstrap_servers, [s.name for s in specs])
    assert counts == {s.name: 3 for s in specs}
    second = await ensure_topics(broker.bootstrap_servers, specs)
    assert set(second.values()) == {"exists"}


async def test_wrong_partition_count_names_topic_counts_and_fix(broker):
    iso = isolated_settings(broker, partitions=4)
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    await admin.create_topics([NewTopic(iso.settings.topics.alerts, 2, 1)])
    await admin.close()
    with pytest.raises(TopicMismatch) as info:
        await ensure_topics(broker.bootstrap_servers, required_topics(iso.settings))
    message = str(info.value)
    assert iso.settings.topics.alerts in message
    assert "has 2 partitions but 4 are configured" in message
    assert "--partitions 2" in message


def test_worker_refuses_to_start_on_a_mismatched_topic(broker):
    iso = isolated_settings(broker, partitions=4)
    asyncio.run(_create(broker.bootstrap_servers, iso.settings.topics.events, 1))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream.tools.cli",
            "worker",
            "--broker",
            broker.url,
            "--app-id",
            iso.settings.app_id,
            "--web-port",
            str(free_port()),
        ],
        env={**os.environ, **iso.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"topic '{iso.settings.topics.events}' has 1 partitions but 4 are configured" in result.stderr
    assert "Traceback" not in result.stderr


def test_topics_create_command(broker):
    iso = isolated_settings(broker)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream.tools.cli",
            "topics",
            "create",
            "--broker",
            broker.url,
            "--app-id",
            iso.settings.app_id,
            "--partitions",
            "2",
        ],
        env={**os.environ, **iso.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("created") == 7
    assert iso.settings.topics.deadletter in result.stdout


def test_a_broker_that_will_not_create_topics_gets_one_line_naming_them():
    with LibrdkafkaMock() as mock:
        for command in (["topics", "create"], ["worker", "--web-port", str(free_port())]):
            result = subprocess.run(
                [sys.executable, "-m", "stream.tools.cli", *command, "--broker", mock.url, "--app-id", "noctl"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 2, result.stderr
            [line] = result.stderr.strip().splitlines()
            assert line.startswith(f"stream-monitor: error: the broker at {mock.bootstrap_servers} did not create")
            assert "inference-events (4 partitions)" in line and "noctl-model-state-changelog (4 partitions)" in line


async def _create(bootstrap, name, partitions):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, partitions, 1)])
    await admin.close()

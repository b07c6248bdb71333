"""Creating and checking every topic before any agent starts.

Tansu auto-creates an unknown topic with its own partition count the moment
a client asks about it, and Faust refuses a table whose changelog partitions
differ from its source topic. So every topic, Faust's own included, is
created here with its declared partition count, and an existing topic with
the wrong count stops the worker with the fix spelled out.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.partitioner import murmur2

from stream.settings import Settings

MODEL_STATE_TABLE = "model-state"
LABEL_JOIN_TABLE = "label-join"
_TOPIC_EXISTS = 36


# murmur2 is pure Python (about 5 us a name), and /health counts a worker's models this way
# each time it is asked: at 1,000 models, polled every 50 ms, 6 to 9 % of a worker's time.
@functools.lru_cache(maxsize=1 << 16)
def model_partition(model: str, partitions: int) -> int:
    """The partition of a topic keyed by model that holds ``model``: what Kafka's default partitioner picks.

    Computed, not asked of a producer: a producer knows the partitions of the topics it writes
    to, and the worker never writes to the events topic.

    >>> from aiokafka.partitioner import DefaultPartitioner
    >>> all(model_partition(m, 4) == DefaultPartitioner()(m.encode(), list(range(4)), [])
    ...     for m in ("fraud-scorer", "churn", "ranker", "m7"))
    True
    """
    return (murmur2(model.encode()) & 0x7FFFFFFF) % partitions


class TopicMismatch(RuntimeError):
    """A topic exists with another partition count than the one declared."""


class TopicsNotCreated(RuntimeError):
    """The broker would not create the topics; the text names the broker, the topic or the reason."""


class BrokerUnreachable(RuntimeError):
    """No Kafka broker answered at the configured address."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic name and the partition count it must have."""

    name: str
    partitions: int
    purpose: str = ""


def required_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the worker reads or writes, Faust's changelogs included.

    >>> [t.name for t in required_topics(Settings(app_id="a"))]  # doctest: +NORMALIZE_WHITESPACE
    ['inference-events', 'inference-labels', 'monitor-alerts', 'monitor-deadletter',
     'model-retrain-requests', 'a-model-state-changelog', 'a-label-join-changelog']
    """
    n = settings.partitions
    t = settings.topics
    return [
        TopicSpec(t.events, n, "inference events in, keyed by model"),
        TopicSpec(t.labels, n, "delayed labels in, keyed by model"),
        TopicSpec(t.alerts, n, "alerts out, keyed by fingerprint"),
        TopicSpec(t.deadletter, n, "records that could not be processed, with reasons"),
        TopicSpec(t.retrain, n, "retraining requests for sustained drift or performance drops"),
        # A changelog must be co-partitioned with the topic that feeds its table.
        TopicSpec(f"{settings.app_id}-{MODEL_STATE_TABLE}-changelog", n, "per-model state (Faust table)"),
        TopicSpec(f"{settings.app_id}-{LABEL_JOIN_TABLE}-changelog", n, "predictions awaiting labels (Faust table)"),
    ]


async def _admin(
    bootstrap: str,
    timeout_s: float,
    on_retry: Callable[[str], None] | None = None,
    kafka_options: dict[str, Any] | None = None,
) -> AIOKafkaAdminClient:
    """A started admin client, retrying with backoff until ``timeout_s``; ``on_retry`` hears each wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.2
    next_report = 0.0
    last: Exception | None = None
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **(kafka_options or {}))
        try:
            await admin.start()
            return admin
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            last = exc
            await admin.close()
        now = loop.time()
        if now >= deadline:
            raise BrokerUnreachable(
                f"cannot reach Kafka at {bootstrap} after {timeout_s:g} s ({last}); "
                "start one with `stream-monitor broker` or pass --broker kafka://HOST:PORT"
            )
        wait = min(delay, deadline - now)
        if on_retry is not None and now >= next_report:
            next_report = now + 10.0  # a line every 10 s, not one per try
            on_retry(
                f"waiting for Kafka at {bootstrap} ({last}); trying again with backoff for {deadline - now:.0f} s more"
            )
        await asyncio.sleep(wait)
        delay = min(delay * 2, 5.0)


async def ensure_topics(
    bootstrap: str,
    specs: list[TopicSpec],
    timeout_s: float = 30.0,
    on_retry: Callable[[str], None] | None = None,
    kafka_options: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Create missing topics and check existing ones; return name -> 'created'|'exists'.

    Waits for the broker with backoff up to ``timeout_s`` (``on_retry`` hears
    each wait). Raises :class:`TopicMismatch` naming the topic, both partition
    counts and the fix, and :class:`BrokerUnreachable` when no broker answers.
    """
    admin = await _admin(bootstrap, timeout_s, on_retry, kafka_options)
    try:
        # Ask only about topics that exist: describing a missing topic makes
        # Tansu create it with its default partition count.
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        result: dict[str, str] = {}
        if missing:
            try:
                response = await admin.create_topics([NewTopic(s.name, s.partitions, 1) for s in missing])
            # aiokafka raises AttributeError when the broker names no controller to send CreateTopics to
            # (librdkafka's mock cluster, for one).
            except (KafkaError, AttributeError) as exc:
                wanted = ", ".join(f"{s.name} ({s.partitions} partitions)" for s in missing)
                raise TopicsNotCreated(
                    f"the broker at {bootstrap} did not create the topics ({type(exc).__name__}: {exc}); "
                    f"create them with your Kafka tools: {wanted}"
                ) from None
            for name, code, message in response.topic_errors:
                if code == _TOPIC_EXISTS:
                    existing.add(name)
                elif code != 0:
                    raise TopicsNotCreated(f"could not create topic {name}: {message} (error {code})")
                else:
                    result[name] = "created"
        present = [s for s in specs if s.name in existing]
        if present:
            described = await admin.describe_topics([s.name for s in present])
            counts = {d["topic"]: len(d["partitions"]) for d in described}
            for spec in present:
                actual = counts.get(spec.name)
                if actual != spec.partitions:
                    raise TopicMismatch(
                        f"topic {spec.name!r} has {actual} partitions but {spec.partitions} "
                        f"are configured; delete and recreate it with {spec.partitions} partitions, "
                        f"or set --partitions {actual} (STREAM_MONITOR_PARTITIONS={actual})"
                    )
                result[spec.name] = "exists"
        return result
    finally:
        await admin.close()


async def cluster_id(
    bootstrap: str, timeout_s: float = 30.0, kafka_options: dict[str, Any] | None = None
) -> str | None:
    """The cluster id the broker reports."""
    admin = await _admin(bootstrap, timeout_s, kafka_options=kafka_options)
    try:
        return (await admin.describe_cluster()).get("cluster_id")
    finally:
        await admin.close()


async def wait_for_kafka(settings: Settings, on_retry: Callable[[str], None] | None = None) -> None:
    """Return once a broker answers at ``settings.broker``; :class:`BrokerUnreachable` after ``connect_timeout_s``."""
    admin = await _admin(settings.bootstrap_servers, settings.connect_timeout_s, on_retry, settings.kafka_options())
    await admin.close()


def ensure_topics_sync(settings: Settings, on_retry: Callable[[str], None] | None = None) -> dict[str, str]:
    """:func:`ensure_topics` for every required topic, from synchronous code."""
    specs = required_topics(settings)
    return asyncio.run(
        ensure_topics(settings.bootstrap_servers, specs, settings.connect_timeout_s, on_retry, settings.kafka_options())
    )

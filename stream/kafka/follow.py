"""Reading a whole topic without joining a consumer group.

A group join waits for the rebalance timeout and rejoining an old group took
about 30 s on Tansu, the embedded broker; tailing alerts needs neither, so the reader
assigns itself every partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.settings import Settings


class TopicReader:
    """Every partition of one topic, from the beginning or from now on."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        from_beginning: bool = False,
        kafka_options: dict[str, Any] | None = None,
    ) -> None:
        self.kafka_options = kafka_options or {}
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.from_beginning = from_beginning
        self.consumer: AIOKafkaConsumer | None = None
        self.partitions: list[TopicPartition] = []

    @classmethod
    def alerts(cls, settings: Settings, *, from_beginning: bool = False) -> TopicReader:
        """A reader of the alerts topic with the settings' broker and its TLS/SASL options."""
        return cls(
            settings.bootstrap_servers,
            settings.topics.alerts,
            from_beginning=from_beginning,
            kafka_options=settings.kafka_options(),
        )

    async def start(self) -> None:
        """Connect, assign every partition and seek to the start point."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False, group_id=None, **self.kafka_options
        )
        await consumer.start()
        partitions = consumer.partitions_for_topic(self.topic) or await self._partitions_from_broker()
        if not partitions:
            await consumer.stop()
            raise LookupError(f"topic {self.topic!r} does not exist; run `stream-monitor topics create`")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        self.partitions = tps
        if self.from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
            # Resolve the end offsets now, so records produced from here on are seen.
            for tp in tps:
                await consumer.position(tp)
        self.consumer = consumer

    async def _partitions_from_broker(self) -> set[int]:
        # The consumer learns every topic's partitions from its first metadata answer, in which an
        # empty topic list means all topics; a broker that reads it as none (librdkafka's mock
        # cluster) is asked about the topic by name.
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, **self.kafka_options)
        await admin.start()
        try:
            described = await admin.describe_topics([self.topic])
        finally:
            await admin.close()
        return {p["partition"] for d in described if d["error_code"] == 0 for p in d["partitions"]}

    async def records(self, timeout_s: float | None = None) -> AsyncIterator[ConsumerRecord]:
        """Yield records as they arrive; stop after ``timeout_s`` without any."""
        assert self.consumer is not None, "call start() first"
        while True:
            batch = await self.consumer.getmany(timeout_ms=500)
            if not batch:
                if timeout_s is not None:
                    timeout_s -= 0.5
                    if timeout_s <= 0:
                        return
                continue
            for tp_records in batch.values():
                for record in tp_records:
                    yield record

    async def until_end(self) -> AsyncIterator[ConsumerRecord]:
        """Yield the records up to the end offsets as they are now, then stop."""
        assert self.consumer is not None, "call start() first"
        end = await self.consumer.end_offsets(self.partitions)
        behind = {tp for tp in self.partitions if await self.consumer.position(tp) < end[tp]}
        while behind:
            batch = await self.consumer.getmany(*behind, timeout_ms=500)
            for tp, tp_records in batch.items():
                for record in tp_records:
                    if record.offset < end[tp]:
                        yield record
            behind = {tp for tp in behind if await self.consumer.position(tp) < end[tp]}

    async def stop(self) -> None:
        """Close the consumer."""
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            await consumer.stop()

    async def __aenter__(self) -> TopicReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def read_all(
    bootstrap_servers: str, topic: str, *, expect: int | None = None, timeout_s: float = 10.0
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the start; stops at ``expect`` records or a quiet spell."""
    out: list[ConsumerRecord] = []
    async with TopicReader(bootstrap_servers, topic, from_beginning=True) as reader:
        try:
            async with asyncio.timeout(timeout_s):
                async for record in reader.records(timeout_s=timeout_s):
                    out.append(record)
                    if expect is not None and len(out) >= expect:
                        break
        except TimeoutError:
            pass
    return out

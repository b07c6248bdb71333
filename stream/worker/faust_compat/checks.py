"""The import-time check that every private Faust and aiokafka name the worker relies on is there, in the shape
it was written against."""

from __future__ import annotations

import hashlib
import inspect

import aiokafka
import faust
from aiokafka.protocol.fetch import FetchRequest
from faust.assignor import PartitionAssignor
from faust.stores import memory as faust_memory
from faust.stores import rocksdb as faust_rocksdb
from faust.tables.base import Collection
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers import aiokafka as driver
from faust.types import Message
from faust.types.tuples import ConsumerMessage

from stream.settings.common import InstallError

# The versions this module was written against and the fault tests pass with.
TESTED_FAUST = "0.15.3"
TESTED_AIOKAFKA = "0.14.0"
# Consumer.ack_all copies the acknowledgement of these Faust functions: the digest of their code
# (comments and blank lines left out) when it was copied.
ACK_FUNCTIONS = (Message.ack, Message.decref, ConsumerMessage.on_final_ack, FaustConsumer.ack)
ACK_CODE_DIGEST = "2933efefe4b04fa0"


class FaustIncompatible(InstallError):
    """The installed Faust or aiokafka lacks a private name the worker relies on."""


def _instance_attributes(cls: type) -> str:
    return inspect.getsource(cls.__init__)


def check_faust() -> None:
    """Stop with one line naming the installed versions if a private name this module needs has changed."""
    consumer_init = _instance_attributes(FaustConsumer)
    checks = [
        (
            "AIOKafkaConsumerThread._create_worker_consumer(transport)",
            _params(driver.AIOKafkaConsumerThread, "_create_worker_consumer") == ["self", "transport"],
        ),
        ("Consumer._new_consumer_thread()", _params(driver.Consumer, "_new_consumer_thread") == ["self"]),
        ("Consumer._new_offset(tp)", _params(FaustConsumer, "_new_offset") == ["self", "tp"]),
        (
            "Consumer._add_gap as a coroutine(tp, offset_from, offset_to)",
            inspect.iscoroutinefunction(getattr(FaustConsumer, "_add_gap", None))
            and _params(FaustConsumer, "_add_gap") == ["self", "tp", "offset_from", "offset_to"],
        ),
        *(
            (f"Consumer.{name} set in __init__", f"self.{name} =" in consumer_init or f"self.{name}:" in consumer_init)
            for name in ("_read_offset", "_committed_offset", "_acked", "_gap")
        ),
        (
            "Consumer.track_message(message) and stop_flow()",
            _params(FaustConsumer, "track_message") == ["self", "message"]
            and _params(FaustConsumer, "stop_flow") == ["self"],
        ),
        (
            "Message.tracked and generation_id",
            all(name in inspect.getsource(Message.__init__) for name in ("self.tracked", "self.generation_id")),
        ),
        (
            "Monitor.stream_inbound_time",
            "self.stream_inbound_time" in inspect.getsource(faust.Monitor.__init__),
        ),
        (
            "Consumer._paused_partitions and _buffered_partitions set in _reset_state",
            all(
                f"self.{name} =" in inspect.getsource(FaustConsumer._reset_state)
                for name in ("_paused_partitions", "_buffered_partitions")
            ),
        ),
        (
            "AIOKafkaConsumer._fetch_max_wait_ms and _client",
            all(
                f"self.{name} =" in inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)
                for name in ("_fetch_max_wait_ms", "_client")
            ),
        ),
        (
            "AIOKafkaConsumerThread._highwaters(partitions)",
            _params(driver.AIOKafkaConsumerThread, "_highwaters") == ["self", "partitions"],
        ),
        (
            "aiokafka.protocol.fetch.FetchRequest(max_wait_time, min_bytes, max_bytes, isolation_level, topics)",
            _params(FetchRequest, "__init__")[:6]
            == ["self", "max_wait_time", "min_bytes", "max_bytes", "isolation_level", "topics"],
        ),
        (
            "Consumer.seek_wait(partitions) run in the consumer thread",
            inspect.iscoroutinefunction(getattr(driver.Consumer, "seek_wait", None))
            and "call_thread" in inspect.getsource(driver.AIOKafkaConsumerThread.seek_wait),
        ),
        (
            "Consumer.getmany reading _wait_next_records(timeout) for records by partition and the active "
            "partitions, and _to_message(tp, record)",
            _params(FaustConsumer, "_wait_next_records") == ["self", "timeout"]
            and "records, active_partitions = await self._wait_next_records(timeout)"
            in inspect.getsource(FaustConsumer.getmany)
            and _params(driver.Consumer, "_to_message") == ["self", "tp", "record"],
        ),
        (
            "Consumer._get_active_partitions(), on_buffer_full(tp) and on_buffer_drop(tp)",
            _params(FaustConsumer, "_get_active_partitions") == ["self"]
            and _params(FaustConsumer, "on_buffer_full") == ["self", "tp"]
            and _params(FaustConsumer, "on_buffer_drop") == ["self", "tp"],
        ),
        ("Worker._schedule_shutdown(signal)", _params(faust.Worker, "_schedule_shutdown") == ["self", "signal"]),
        (
            "Collection.send_changelog(partition, key, value)",
            _params(Collection, "send_changelog")[:4] == ["self", "partition", "key", "value"],
        ),
        ("Collection.data", isinstance(inspect.getattr_static(Collection, "data", None), property)),
        (
            "Collection.apply_changelog_batch(batch), stores reading each event's message tp, offset, key, ...",
            _params(Collection, "apply_changelog_batch") == ["self", "batch"]
            and all(
                f".{name}" in inspect.getsource(faust_rocksdb.Store.apply_changelog_batch)
                for name in ("message", "tp", "offset", "partition", "key", "value")
            ),
        ),
        (
            "Collection._new_store_by_url(url); memory.Store data and _key_partition, persisted_offset(tp), "
            "set_persisted_offset(tp, offset), on_recovery_completed(active_tps, standby_tps)",
            _params(Collection, "_new_store_by_url") == ["self", "url"]
            and all(
                f"self.{name}" in inspect.getsource(faust_memory.Store.__post_init__)
                for name in ("data", "_key_partition")
            )
            and _params(faust_memory.Store, "persisted_offset") == ["self", "tp"]
            and _params(faust_memory.Store, "set_persisted_offset") == ["self", "tp", "offset"]
            and _params(faust_memory.Store, "on_recovery_completed") == ["self", "active_tps", "standby_tps"],
        ),
        ("Message.incref", callable(getattr(Message, "incref", None))),
        (
            "Message.ack, decref, ConsumerMessage.on_final_ack and Consumer.ack as Consumer.ack_all copies them",
            code_digest(*ACK_FUNCTIONS) == ACK_CODE_DIGEST,
        ),
        ("PartitionAssignor.assigned_actives", callable(getattr(PartitionAssignor, "assigned_actives", None))),
        (
            "Recovery.completed and in_recovery",
            "self.completed" in inspect.getsource(Recovery.__init__) and hasattr(Recovery, "in_recovery"),
        ),
        ("App.rebalancing", hasattr(faust.App, "rebalancing")),
        (
            "rocksdb.Store._db_for_partition(partition), _dbs and offset_key, with rocksdict",
            _params(faust_rocksdb.Store, "_db_for_partition") == ["self", "partition"]
            and "self._dbs =" in _instance_attributes(faust_rocksdb.Store)
            and isinstance(getattr(faust_rocksdb.Store, "offset_key", None), bytes)
            and faust_rocksdb.USE_ROCKSDICT,
        ),
    ]
    missing = [name for name, ok in checks if not ok]
    if missing:
        raise FaustIncompatible(
            f"faust-streaming {faust.__version__} with aiokafka {aiokafka.__version__} lacks what the worker relies on "
            f"({'; '.join(missing)}); install the tested versions: "
            f"faust-streaming=={TESTED_FAUST}, aiokafka=={TESTED_AIOKAFKA}"
        )


def code_digest(*functions: object) -> str:
    """A digest of the functions' source code, comments and blank lines left out."""
    lines = []
    for function in functions:
        for line in inspect.getsource(function).splitlines():  # type: ignore[arg-type]
            code = line.split("#", 1)[0].rstrip()
            if code:
                lines.append(code)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _params(cls: type, name: str) -> list[str]:
    function = getattr(cls, name, None)
    if function is None:
        return []
    return list(inspect.signature(function).parameters)

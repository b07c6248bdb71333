"""A second Kafka-protocol implementation for the integration tests: librdkafka's mock cluster.

librdkafka (the C client behind confluent-kafka, whose wheel bundles it) carries a
broker of its own for testing clients: produce, fetch, consumer groups, offsets and
metadata over the real wire protocol, written independently of Tansu and of Apache
Kafka. It runs in a child process (``python -m tests.integration.librdkafka_mock``)
that prints its bootstrap address and creates topics on request: the mock names no
controller, so clients cannot create topics (CreateTopics needs one), and an
operator's Kafka that forbids creating topics behaves the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import subprocess
import sys
from collections.abc import Iterable

from stream.kafka.topics import TopicSpec


def _library() -> ctypes.CDLL:
    import confluent_kafka

    here = os.path.dirname(confluent_kafka.__file__)
    bundled = glob.glob(os.path.join(here, "..", "confluent_kafka.libs", "librdkafka*.so*"))
    path = bundled[0] if bundled else ctypes.util.find_library("rdkafka")
    if path is None:
        raise RuntimeError("librdkafka not found (pip install confluent-kafka)")
    lib = ctypes.CDLL(path)
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    text = ctypes.c_char_p
    lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, text, text, text, ctypes.c_size_t]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
    lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_topic_create.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    return lib


def serve() -> None:  # pragma: no cover - runs in the child
    """Run a one-broker mock cluster; each stdin line ``TOPIC PARTITIONS`` creates a topic."""
    lib = _library()
    conf = lib.rd_kafka_conf_new()
    error = ctypes.create_string_buffer(512)
    # The cluster lives inside a client handle; this one never connects anywhere useful.
    lib.rd_kafka_conf_set(conf, b"bootstrap.servers", b"127.0.0.1:9", error, len(error))
    lib.rd_kafka_conf_set(conf, b"log_level", b"0", error, len(error))
    handle = lib.rd_kafka_new(0, conf, error, len(error))
    cluster = lib.rd_kafka_mock_cluster_new(handle, 1)
    print(lib.rd_kafka_mock_cluster_bootstraps(cluster).decode(), flush=True)
    for line in sys.stdin:
        name, partitions = line.split()
        code = lib.rd_kafka_mock_topic_create(cluster, name.encode(), int(partitions), 1)
        print(code, flush=True)


class LibrdkafkaMock:
    """The mock cluster in a child process, with the interface of :class:`EmbeddedBroker` the tests use."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.bootstrap_servers = ""

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap_servers}"

    @property
    def port(self) -> int:
        return int(self.bootstrap_servers.rsplit(":", 1)[1])

    def start(self) -> LibrdkafkaMock:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.librdkafka_mock"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        )
        self.bootstrap_servers = self.process.stdout.readline().strip()
        if not self.bootstrap_servers:
            raise RuntimeError("librdkafka's mock cluster did not start")
        return self

    def create_topics(self, specs: Iterable[TopicSpec]) -> None:
        for spec in specs:
            self.process.stdin.write(f"{spec.name} {spec.partitions}\n")
            self.process.stdin.flush()
            code = self.process.stdout.readline().strip()
            if code != "0":
                raise RuntimeError(f"mock cluster could not create {spec.name}: error {code}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stdin.close()
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def __enter__(self) -> LibrdkafkaMock:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    serve()

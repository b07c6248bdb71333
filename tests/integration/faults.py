"""Tools for inflicting faults: a TCP proxy that can cut a broker off, a local S3 store
that a broker can be killed and restarted on, and the fault report.

The proxy sits between the clients and the broker (which advertises the
proxy's port), so cutting it is the broker going away for every client at
once, while the broker and its data live on.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass

from stream.kafka.embedded_broker import free_port


class TcpProxy:
    """Forward connections on ``port`` to ``target_port``; :meth:`cut` and :meth:`restore` the link."""

    def __init__(self, target_port: int, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.target_port = target_port
        self.port = port or free_port(host)
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.connections = 0

    def start(self) -> TcpProxy:
        """Listen and forward (again)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    restore = start

    def cut(self) -> None:
        """Refuse new connections and drop every open one, as a dead broker would."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    stop = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((self.host, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
                self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class LocalS3:
    """moto's S3 server on a loopback port, with one bucket: where a broker keeps its log across restarts.

    moto honours S3's conditional writes (If-Match, If-None-Match), which Tansu's S3 storage
    relies on when requests race on one partition's metadata; a store that ignores them
    loses acknowledged records.
    """

    bucket = "tansu"

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """What Tansu reads to reach the store."""
        return {
            "AWS_ENDPOINT": self.url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> LocalS3:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(f"{self.url}/{self.bucket}", method="PUT")
                with urllib.request.urlopen(request, timeout=2):
                    return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@dataclass
class FaultRow:
    """One line of the fault table printed at the end of the test run."""

    fault: str
    action: str
    produced: int
    counted: int
    duplicates: int
    dead_letters: int
    result: str
    broker: str = "Tansu"


def broker_kind(broker: object) -> str:
    """How the fault table names the broker a test ran on."""
    return "librdkafka mock" if type(broker).__name__ == "LibrdkafkaMock" else "Tansu"


FAULT_ROWS: list[FaultRow] = []


def report(row: FaultRow) -> None:
    """Add ``row`` to the table printed after the tests."""
    FAULT_ROWS.append(row)

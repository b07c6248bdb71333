"""Tools for inflicting faults: a TCP proxy that can cut a broker off, and the fault report.

The proxy sits between the clients and the broker (which advertises the
proxy's port), so cutting it is the broker going away for every client at
once, while the broker and its data live on.
"""

from __future__ import annotations

import contextlib
import socket
import threading
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


FAULT_ROWS: list[FaultRow] = []


def report(row: FaultRow) -> None:
    """Add ``row`` to the table printed after the tests."""
    FAULT_ROWS.append(row)

"""Running a worker: topics first, then the Faust app, with a bounded shutdown.

A Faust worker whose agents were stuck was seen here to ignore SIGTERM for an
hour. ``BoundedWorker`` starts a watchdog on the first SIGTERM or
SIGINT: if the orderly shutdown has not finished within the grace period,
the process exits anyway, with a log line saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import os
import signal
import sys
import threading
from dataclasses import replace
from typing import Any, NoReturn

from stream.kafka.embedded_broker import TANSU_CLUSTER_IDS
from stream.kafka.topics import cluster_id, ensure_topics_sync
from stream.settings import Settings
from stream.worker.app import create_app, load_monitors
from stream.worker.faust_compat import StopSignalWorker
from stream.worker.memory_release import give_large_blocks_their_own_pages

log = logging.getLogger(__name__)

EXIT_SHUTDOWN_TIMEOUT = 3


class BoundedWorker(StopSignalWorker):
    """A Faust worker that always exits within ``grace_s`` of a stop signal."""

    def __init__(self, *args: Any, grace_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grace_s = grace_s
        self._watchdog: threading.Timer | None = None

    def install_signal_handlers(self) -> None:
        """Faust's handlers, plus a watchdog armed from the signal itself.

        Faust handles signals in the event loop; when a detector blocks the
        loop, that handler never runs. A Python-level handler does: it runs in
        the main thread between bytecodes, even inside a blocking sleep, while
        asyncio's wake-up descriptor still carries the signal to Faust.
        """
        super().install_signal_handlers()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._arm_watchdog()

    def on_stop_signal(self) -> None:
        """Faust's handler saw the signal: arm the watchdog (if the Python-level handler did not already)."""
        self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.grace_s, self._force_exit)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _force_exit(self) -> None:
        # Behind `worker | tee log`, Ctrl-C kills tee too: writing to its pipe then raises, and the
        # exit must happen all the same.
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"stream-monitor worker: shutdown took longer than {self.grace_s:g} s; exiting now\n")
            sys.stderr.flush()
        os._exit(EXIT_SHUTDOWN_TIMEOUT)


class PipeSafeStream(io.TextIOBase):
    """A text stream that drops what it can no longer write, instead of raising.

    Behind ``worker 2>&1 | tee log``, Ctrl-C stops ``tee`` first; every later
    write to the pipe raised, in the middle of Faust's orderly shutdown, which
    then never finished and only the shutdown watchdog ended the process.
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self.stream.write(text)
            except (BrokenPipeError, ValueError):
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                self.broken = True

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:
        # Anything else (buffer, errors, ...) is the wrapped stream's.
        return getattr(self.stream, name)


def _say(line: str) -> None:
    # Before Faust starts there is no logging set up; operators read stderr.
    sys.stderr.write(f"stream-monitor worker: {line}\n")
    sys.stderr.flush()


def run_worker(settings: Settings, loglevel: str = "info") -> NoReturn:
    """Create every topic, then run the worker until it is stopped.

    Raises the errors of :func:`stream.kafka.topics.ensure_topics` before Faust
    starts, so a missing broker or a mismatched topic is one clear message.
    """
    load_monitors(settings)  # a mistake in the monitor file stops here, in one line
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    # aiokafka logs each failed connection attempt; ensure_topics reports once.
    client_log.setLevel(logging.CRITICAL)
    try:
        ensure_topics_sync(settings, on_retry=_say)
        cluster = asyncio.run(
            cluster_id(settings.bootstrap_servers, settings.connect_timeout_s, settings.kafka_options())
        )
    finally:
        client_log.setLevel(level)
    if cluster in TANSU_CLUSTER_IDS and not settings.single_record_batches:
        _say(
            f"broker is Tansu (cluster id {cluster!r}); sending one changelog record "
            "per batch so table recovery sees every record"
        )
        settings = replace(settings, single_record_batches=True)
    sys.stdout, sys.stderr = PipeSafeStream(sys.stdout), PipeSafeStream(sys.stderr)
    monitor_app = create_app(settings)
    worker = BoundedWorker(
        monitor_app.app,
        loglevel=loglevel,
        grace_s=settings.shutdown_grace_s,
        redirect_stdouts=False,
        # mode's defaults are the streams of import time, not the pipe-safe ones.
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
    collect_garbage_less_often()
    give_large_blocks_their_own_pages()
    worker.execute_from_commandline()


def collect_garbage_less_often() -> None:
    """Run Python's cyclic garbage collector less often than its default.

    Every record decodes into thousands of short-lived objects, and with the
    default threshold (700 allocations) the collector ran so often, walking
    the young objects each time, that it cost about a third of decoding.
    Objects alive at start-up are frozen out of its sight altogether.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)

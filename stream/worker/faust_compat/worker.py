"""Faust's worker with a hook for the stop signal: a worker whose agents were stuck ignored SIGTERM for an hour."""

from __future__ import annotations

import signal

import faust


class StopSignalWorker(faust.Worker):
    """Faust's worker that calls :meth:`on_stop_signal` when a stop signal reaches its event loop."""

    def on_stop_signal(self) -> None:
        """Called from Faust's own signal handler, before it schedules the shutdown."""

    def _schedule_shutdown(self, signal: signal.Signals) -> None:
        self.on_stop_signal()
        super()._schedule_shutdown(signal)

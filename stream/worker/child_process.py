"""A worker in a child process: started, health-checked and stopped for sure.

The demo and the integration tests run workers this way, exactly as an
operator would (``stream-monitor worker ...``), so a worker that cannot
start, hangs or crashes is seen for what it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from stream.kafka.embedded_broker import free_port


class WorkerStartError(RuntimeError):
    """The worker process exited or did not become ready in time."""


class WorkerProcess:
    """``stream-monitor worker`` as a child process with a health-checked start."""

    def __init__(
        self,
        broker_url: str,
        *,
        app_id: str = "stream-monitor",
        web_port: int | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        loglevel: str = "info",
    ) -> None:
        self.broker_url = broker_url
        self.app_id = app_id
        self.web_port = web_port or free_port()
        self.extra_args = extra_args
        self.env = env
        self.loglevel = loglevel
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"worker-{app_id}-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the worker's web server."""
        return f"http://127.0.0.1:{self.web_port}"

    def command(self) -> list[str]:
        """The command line the worker runs with."""
        return [
            sys.executable,
            "-m",
            "stream.tools.cli",
            "worker",
            "--broker",
            self.broker_url,
            "--app-id",
            self.app_id,
            "--web-port",
            str(self.web_port),
            "--loglevel",
            self.loglevel,
            *self.extra_args,
        ]

    def start(self, ready_timeout_s: float = 90.0) -> WorkerProcess:
        """Start the worker and wait until ``/health`` says it is ready."""
        env = {**os.environ, **(self.env or {})}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise WorkerStartError(
                    f"worker exited with code {code} at start-up; last lines of {self.log_path}:\n" + self.log_tail()
                )
            health = self.health()
            if health and health.get("ready"):
                return self
            time.sleep(0.2)
        self.stop()
        raise WorkerStartError(
            f"worker not ready within {ready_timeout_s:g} s; last lines of {self.log_path}:\n" + self.log_tail()
        )

    def health(self) -> dict[str, Any] | None:
        """The worker's ``/health`` JSON, or None if it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the worker logged."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = 15.0) -> int | None:
        """SIGTERM, wait ``grace_s``, then SIGKILL; returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def kill(self) -> int | None:
        """SIGKILL at once, as a crash or the OOM killer would; returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()

    @property
    def pid(self) -> int | None:
        """The worker's process id while it runs."""
        return self.process.pid if self.process is not None else None

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

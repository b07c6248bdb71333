"""Ctrl-C reaches a worker whose output goes through a pipe (`worker 2>&1 | tee log`): it stops within its grace."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request

from stream.worker.child_process import free_port

from .conftest import isolated_settings


def test_ctrl_c_through_a_pipe_stops_the_worker_within_the_grace_period(broker, tmp_path):
    iso = isolated_settings(broker)
    port = free_port()
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "stream.tools.cli", "worker", "--broker", iso.settings.broker]
    worker = shlex.join([*command, "--web-port", str(port), "--app-id", iso.settings.app_id])
    # A shell pipeline in its own process group, as a terminal runs it: Ctrl-C signals the whole group.
    shell = subprocess.Popen(
        ["bash", "-c", f"{worker} 2>&1 | tee {shlex.quote(str(log))} > /dev/null"],
        env={**os.environ, **iso.env, "STREAM_MONITOR_SHUTDOWN_GRACE_S": "10"},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while "stream-monitor worker: ready" not in (log.read_text(errors="replace") if log.exists() else ""):
            assert time.monotonic() < deadline and shell.poll() is None, log.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert response.status == 200
        started = time.monotonic()
        os.killpg(shell.pid, signal.SIGINT)
        shell.wait(timeout=30)
        stopped = time.monotonic() - started
        # Nothing of the group is left, worker included.
        left = subprocess.run(["pgrep", "-g", str(shell.pid)], capture_output=True, text=True).stdout.split()
        assert left == [], f"still running after Ctrl-C: {left}"
        assert stopped < 10, (
            f"the pipeline took {stopped:.1f} s to stop; log:\n{log.read_text(errors='replace')[-2500:]}"
        )
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)

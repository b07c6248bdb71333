"""`stream-monitor demo` end to end: embedded broker, worker, traffic, summary."""

import subprocess
import sys


def test_demo_catches_the_latency_incident_and_exits_zero():
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", "demo", "--duration", "20", "--rate", "300"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "ALERT" in out and "fraud-scorer" in out
    assert "caught latency_spike on fraud-scorer" in out
    assert "demo summary" in out
    assert "records dead-lettered" in out
    assert "Traceback" not in out + result.stderr

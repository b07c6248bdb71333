"""`stream-monitor demo` end to end: embedded broker, worker, traffic, summary."""

import subprocess
import sys


def test_demo_catches_the_incidents_and_exits_zero():
    result = subprocess.run(
        [sys.executable, "-m", "stream.tools.cli", "demo", "--duration", "20", "--rate", "300"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "ALERT" in out and "fraud-scorer" in out
    assert "caught latency_spike on fraud-scorer" in out
    # At least one security and one resource alert, and the leaked card never printed.
    assert "caught pii_leak on support-llm" in out and "caught memory_pressure on recommender" in out
    assert "4111" not in out
    assert "demo summary" in out
    assert "records dead-lettered" in out
    assert "Traceback" not in out + result.stderr

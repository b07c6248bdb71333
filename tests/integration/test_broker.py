"""The embedded broker starts, answers Kafka requests and never outlives its owner."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from stream.kafka.embedded_broker import BrokerUnavailable, EmbeddedBroker, metadata_ok


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_until(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_start_answers_metadata_and_stop_leaves_no_process():
    broker = EmbeddedBroker().start()
    pid = broker.process.pid
    assert metadata_ok(broker.host, broker.port)
    t0 = time.monotonic()
    broker.stop()
    assert time.monotonic() - t0 < broker.stop_grace_s + 2
    assert not pid_alive(pid)
    assert not metadata_ok(broker.host, broker.port, timeout=0.3)


def test_broker_dies_with_a_killed_parent():
    script = textwrap.dedent(
        """
        import sys, time
        from stream.kafka.embedded_broker import EmbeddedBroker
        b = EmbeddedBroker().start()
        print(b.process.pid, b.port, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid, port = map(int, parent.stdout.readline().split())
        assert pid_alive(pid)
        parent.kill()
        parent.wait()
        assert wait_until(lambda: not pid_alive(pid), 5.0), "broker outlived its parent"
        assert not metadata_ok("127.0.0.1", port, timeout=0.3)
    finally:
        parent.kill()


def test_port_in_use_by_a_broker_is_refused(broker):
    with pytest.raises(BrokerUnavailable, match="--broker"):
        EmbeddedBroker(port=broker.port).start()


def test_missing_binary_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(BrokerUnavailable) as info:
        EmbeddedBroker().start()
    message = str(info.value)
    assert "\n" not in message
    assert "embedded broker unavailable" in message and "--broker" in message


def test_broker_command_runs_in_foreground_until_sigterm():
    from stream.kafka.embedded_broker import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.tools.cli", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "broker ready at kafka://127.0.0.1:" in proc.stdout.readline()
        assert metadata_ok("127.0.0.1", port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not metadata_ok("127.0.0.1", port, timeout=0.3)
    finally:
        proc.kill()

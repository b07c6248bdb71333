"""The command line: help for every command, one clear line for a bad --broker."""

import json
import os
import subprocess
import sys

import orjson
import pytest
from click.testing import CliRunner

from stream.kafka.embedded_broker import free_port
from stream.tools.cli import cli

COMMANDS = [[], ["broker"], ["topics"], ["topics", "create"], ["worker"], ["simulate"], ["alerts"], ["demo"]]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "top")
def test_every_command_has_help(args):
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert len(result.output.splitlines()) > 4


def test_help_lists_broker_option_with_environment_variable():
    result = CliRunner().invoke(cli, ["worker", "--help"])
    assert "--broker" in result.output and "STREAM_MONITOR_BROKER" in result.output


def run_cli(*args, timeout=60, env=None):
    return subprocess.run(
        [sys.executable, "-m", "stream.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("command", [["worker"], ["topics", "create"]])
def test_malformed_broker_url_is_one_clear_line(command):
    result = run_cli(*command, "--broker", "http://localhost")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["stream-monitor: error: broker: 'http://localhost' is not of the form kafka://HOST:PORT"]
    assert "Traceback" not in result.stdout + result.stderr


KAFKA_COMMANDS = [
    ["worker"],
    ["topics", "create"],
    ["alerts"],
    ["alerts", "--follow"],
    ["report", "--output", "/dev/null"],
    ["route", "--webhook", "http://127.0.0.1:9/hook"],
    ["simulate", "--duration", "1"],
]


@pytest.mark.parametrize("command", KAFKA_COMMANDS, ids=" ".join)
def test_unreachable_broker_is_one_clear_line(command):
    url = f"kafka://127.0.0.1:{free_port()}"
    result = run_cli(*command, "--broker", url, env={"STREAM_MONITOR_CONNECT_TIMEOUT_S": "1"})
    assert result.returncode == 2, result.stderr
    *waiting, last = result.stderr.strip().splitlines()
    # Every command says once that it waits; then one line with the verdict.
    assert len(waiting) == 1 and "waiting for Kafka at 127.0.0.1:" in waiting[0], result.stderr
    assert last.startswith("stream-monitor: error: cannot reach Kafka at 127.0.0.1:")
    assert "--broker" in last
    assert "Traceback" not in result.stdout


def test_bad_environment_setting_names_the_variable():
    result = subprocess.run(
        [sys.executable, "-m", "stream.tools.cli", "topics", "create"],
        capture_output=True,
        text=True,
        env={**os.environ, "STREAM_MONITOR_PARTITIONS": "lots"},
        timeout=60,
    )
    assert result.returncode == 2
    assert "STREAM_MONITOR_PARTITIONS" in result.stderr


def test_profile_build_writes_a_loadable_profile_and_counts_bad_lines(tmp_path):
    from stream.monitoring.profiles import ReferenceProfile
    from stream.sdk.client import make_event

    lines = [
        orjson.dumps(make_event("m", "1", 10.0 + i % 5, i % 2, features={"x": float(i), "c": "ab"[i % 2]}))
        for i in range(300)
    ]
    lines += [b"{broken", orjson.dumps(make_event("other", "1", 1.0, 0)), b""]
    source = tmp_path / "train.jsonl"
    source.write_bytes(b"\n".join(lines))
    result = CliRunner().invoke(
        cli, ["profile", "build", str(source), "--model", "m", "--profile-dir", str(tmp_path / "profiles")]
    )
    assert result.exit_code == 0, result.output
    assert "300 events, 2 features" in result.output and "1 invalid lines skipped" in result.output
    profile = ReferenceProfile.load(tmp_path / "profiles" / "m.profile.json")
    assert profile.events == 300 and profile.source == "file:train.jsonl"
    assert profile.stats.features.features["x"].moments.max == 299.0


def test_profile_build_for_an_absent_model_is_one_line(tmp_path):
    source = tmp_path / "empty.jsonl"
    source.write_text("")
    result = CliRunner().invoke(
        cli, ["profile", "build", str(source), "--model", "ghost", "--out", str(tmp_path / "p.json")]
    )
    assert result.exit_code == 2
    assert "error: no events of model 'ghost'" in result.output


@pytest.mark.parametrize("option", ["--rate", "--duration"])
def test_simulate_refuses_a_rate_or_duration_that_is_not_positive(option):
    done = run_cli("simulate", option, "-5", "--broker", "kafka://127.0.0.1:1")
    assert done.returncode == 2
    assert option in done.stderr and "sent" not in done.stdout


def test_stats_tables_fit_80_columns_and_never_cut_a_name():
    from rich.console import Console

    from stream.monitoring.model_monitor import ModelMonitor
    from stream.settings import DetectionSettings
    from stream.tools.stats_view import render_models, render_stats

    model = "checkout-fraud-scorer-eu-west-production"
    monitor = ModelMonitor(model, DetectionSettings())
    feature = "client.duplicate_request_ratio_last_hour"
    monitor.process(
        [
            {"model_version": "2.3.0-rc.1", "timestamp": 1_000.0 + i, "latency_ms": 5.0, "features": {feature: i}}
            for i in range(50)
        ]
    )
    console = Console(width=80, record=True)
    console.print(render_models([monitor.overview()]))
    console.print(render_stats(json.loads(json.dumps(monitor.summary(), default=float))))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    # A long name wraps inside its column (rich folds it) rather than ending in an ellipsis.
    first_column = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│"))
    assert feature in first_column and model in first_column

"""What every ``stream-monitor`` command shares: options, settings, and errors in one line."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from stream.kafka.embedded_broker import BrokerUnavailable
from stream.kafka.topics import BrokerUnreachable, TopicMismatch, TopicsNotCreated
from stream.monitoring.profiles import ProfileError
from stream.settings import ConfigError, Settings
from stream.settings.common import InstallError

BROKER_HELP = "Kafka to use, as kafka://HOST:PORT (env STREAM_MONITOR_BROKER)."


CLEAR_ERRORS = (
    ConfigError,
    InstallError,
    BrokerUnavailable,
    BrokerUnreachable,
    TopicMismatch,
    TopicsNotCreated,
    LookupError,
    ProfileError,
)


def one_line_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors an operator can fix into one line and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CLEAR_ERRORS as exc:
            message = str(exc)
            click.echo(f"stream-monitor: error: {message}", err=True)
            sys.exit(2)

    return wrapper


def settings_from(**options: Any) -> Settings:
    """Settings from the environment with the command's options on top."""
    return Settings.from_env(**options)


def quiet_client_logs() -> None:
    # aiokafka logs every failed connection attempt at ERROR; the CLI reports
    # an unreachable broker itself, once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


broker_option = click.option("--broker", envvar="STREAM_MONITOR_BROKER", help=BROKER_HELP)


partitions_option = click.option(
    "--partitions", type=int, help="Partitions per topic (env STREAM_MONITOR_PARTITIONS; 4)."
)


app_id_option = click.option("--app-id", help="Faust app id, also the consumer group (env STREAM_MONITOR_APP_ID).")


# Simulated traffic (simulate, demo): both must be positive, or nothing is sent.
positive = click.FloatRange(min=0, min_open=True)
duration_option = click.option("--duration", type=positive, default=60.0, show_default=True, help="Seconds to run.")
rate_option = click.option("--rate", type=positive, default=300.0, show_default=True, help="Events per second.")
connect_timeout_option = click.option(
    "--connect-timeout",
    "connect_timeout_s",
    type=float,
    help="Seconds to keep trying to reach Kafka before giving up (env STREAM_MONITOR_CONNECT_TIMEOUT_S; 120).",
)


def say_waiting(line: str) -> None:
    """A progress line while a command waits for Kafka."""
    click.echo(f"stream-monitor: {line}", err=True)


def require_kafka(settings: Settings) -> None:
    """Wait for Kafka as the worker does: a progress line every 10 s, then one line naming the broker and the fix.

    Every command that talks to Kafka calls this first, so an unreachable
    broker reads the same everywhere (see :func:`one_line_errors`).
    """
    from stream.kafka.topics import wait_for_kafka

    quiet_client_logs()
    asyncio.run(wait_for_kafka(settings, on_retry=say_waiting))

"""The ``stream-monitor`` command line: the root group and the commands that run things.

The commands that read what the monitor produced are in :mod:`stream.tools.cli_read`.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading

import click

from stream.kafka.embedded_broker import EmbeddedBroker
from stream.tools.cli_options import (
    app_id_option,
    broker_option,
    connect_timeout_option,
    duration_option,
    one_line_errors,
    partitions_option,
    quiet_client_logs,
    rate_option,
    require_kafka,
    say_waiting,
    settings_from,
)
from stream.tools.cli_read import alerts, profile, report, route, stats, tensorboard


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stream-monitor")
def cli() -> None:
    """Real-time monitoring of AI models in production.

    Inference services publish events to Kafka; workers keep windowed
    statistics per model, detect anomalies and drift, and publish alerts.
    Start with `stream-monitor demo`: it needs no Kafka.
    """


@cli.command()
@click.option("--port", type=int, default=9092, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--storage-engine",
    "storage",
    default="memory://tansu/",
    show_default=True,
    help="memory://NAME/, or s3://BUCKET/ on an S3 store that honours conditional writes "
    "(AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP from the environment).",
)
@one_line_errors
def broker(port: int, host: str, storage: str) -> None:
    """Run the embedded Kafka-protocol broker (Tansu) in the foreground."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(port=port, host=host, storage=storage) as embedded:
        kept = "in memory" if storage.startswith("memory://") else f"kept in {storage}"
        click.echo(f"broker ready at {embedded.url} ({kept}; Ctrl-C stops it)")
        click.echo(f"  stream-monitor worker --broker {embedded.url}")
        try:
            while not stop.wait(0.5) and embedded.running:
                pass
        except KeyboardInterrupt:
            pass
    click.echo("broker stopped")


@cli.group()
def topics() -> None:
    """Manage the topics the monitor uses."""


@topics.command("create")
@broker_option
@partitions_option
@app_id_option
@connect_timeout_option
@one_line_errors
def topics_create(
    broker: str | None, partitions: int | None, app_id: str | None, connect_timeout_s: float | None
) -> None:
    """Create every topic with its partition count; check the ones that exist."""
    from stream.kafka.topics import ensure_topics_sync, required_topics

    quiet_client_logs()
    settings = settings_from(broker=broker, partitions=partitions, app_id=app_id, connect_timeout_s=connect_timeout_s)
    quiet_client_logs()
    result = ensure_topics_sync(settings, on_retry=say_waiting)
    for spec in required_topics(settings):
        click.echo(f"{result[spec.name]:>8}  {spec.name}  ({spec.partitions} partitions; {spec.purpose})")


@cli.command()
@broker_option
@partitions_option
@app_id_option
@click.option("--web-port", type=int, help="Port of the web server (env STREAM_MONITOR_WEB_PORT; 6066).")
@click.option("--web-host", help="Address of the web server (env STREAM_MONITOR_WEB_HOST; 127.0.0.1).")
@click.option("--window", "window_s", type=float, help="Tumbling window size in seconds (60).")
@click.option("--hopping", "hopping_s", type=float, help="Hopping window size in seconds (600).")
@click.option("--hop", "hop_s", type=float, help="Hopping window step in seconds (60).")
@click.option("--lateness", "lateness_s", type=float, help="Allowed lateness of events in seconds (30).")
@click.option("--profile-dir", help="Folder of reference profiles (env STREAM_MONITOR_PROFILE_DIR).")
@click.option(
    "--monitors",
    "monitors_file",
    type=click.Path(dir_okay=False),
    help="TOML file of detectors per model and signal (env STREAM_MONITOR_MONITORS_FILE).",
)
@click.option(
    "--reference-events",
    type=int,
    help="Without a profile, the first N events of a version become its reference (1000).",
)
@connect_timeout_option
@click.option(
    "--loglevel",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@one_line_errors
def worker(
    broker: str | None,
    partitions: int | None,
    app_id: str | None,
    web_port: int | None,
    web_host: str | None,
    window_s: float | None,
    hopping_s: float | None,
    hop_s: float | None,
    lateness_s: float | None,
    profile_dir: str | None,
    monitors_file: str | None,
    reference_events: int | None,
    connect_timeout_s: float | None,
    loglevel: str,
) -> None:
    """Run a monitoring worker: creates the topics, then consumes inference events.

    Once ready it prints the addresses of its pages on stderr. On its web
    server (--web-host, --web-port; 6066): / the live page, /metrics for
    Prometheus, /models and /models/MODEL/stats as JSON, and /health, which
    answers {"ready": true} once partitions are assigned and table state is
    recovered.
    """
    from stream.worker.run import run_worker

    settings = settings_from(
        broker=broker,
        partitions=partitions,
        app_id=app_id,
        web_port=web_port,
        web_host=web_host,
        window_s=window_s,
        hopping_s=hopping_s,
        hop_s=hop_s,
        lateness_s=lateness_s,
        profile_dir=profile_dir,
        monitors_file=monitors_file,
        reference_events=reference_events,
        connect_timeout_s=connect_timeout_s,
    )
    run_worker(settings, loglevel=loglevel)


@cli.command()
@broker_option
@duration_option
@rate_option
@click.option("--seed", type=int, default=None, help="Random seed for repeatable traffic.")
@click.option("--topic", default=None, help="Inference events topic (inference-events).")
@one_line_errors
def simulate(broker: str | None, duration: float, rate: float, seed: int | None, topic: str | None) -> None:
    """Produce realistic traffic for three models with scripted incidents."""
    from rich.progress import Progress

    from stream.sdk.client import MonitorClient
    from stream.tools.simulator import DEFAULT_INCIDENTS, TrafficSimulator
    from stream.tools.simulator import simulate as run_sim

    quiet_client_logs()
    settings = settings_from(broker=broker, topic_events=topic)
    require_kafka(settings)
    for incident in DEFAULT_INCIDENTS:
        click.echo(
            f"incident {incident.name}: {incident.description} "
            f"(from {incident.start * duration:.0f} s to {min(incident.end, 1) * duration:.0f} s)"
        )

    async def main() -> None:
        from stream.kafka.topics import ensure_topics, required_topics

        await ensure_topics(
            settings.bootstrap_servers,
            required_topics(settings)[:4],
            settings.connect_timeout_s,
            kafka_options=settings.kafka_options(),
        )
        client = MonitorClient(settings.broker, topic=settings.topics.events, kafka_options=settings.kafka_options())
        await client.start()
        with Progress() as progress:
            task = progress.add_task("simulating", total=duration)
            report = await run_sim(
                client.record_event,
                duration_s=duration,
                rate=rate,
                simulator=TrafficSimulator(seed=seed),
                on_tick=lambda p, r: progress.update(task, completed=p * duration, description=f"{r.events} events"),
            )
            progress.update(task, completed=duration)
        await client.close()
        click.echo(
            f"sent {client.stats.sent} of {report.events} events in {report.duration_s:.1f} s "
            f"({client.stats.records_sent} records, {client.stats.dropped} dropped)"
        )

    asyncio.run(main())


@cli.command()
@duration_option
@rate_option
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed.")
@click.option(
    "--broker",
    envvar="STREAM_MONITOR_DEMO_BROKER",
    help="Use this Kafka instead of starting the embedded broker.",
)
@click.option(
    "--window",
    "window_s",
    type=float,
    default=None,
    help="Tumbling window in seconds (default: a sixth of the duration, at most 60).",
)
@one_line_errors
def demo(duration: float, rate: float, seed: int, broker: str | None, window_s: float | None) -> None:
    """Broker, worker and simulated traffic in one go, with alerts shown live.

    Starts the embedded broker (unless --broker is given), one worker and the
    traffic simulator; shows alerts as they arrive; after --duration seconds
    or Ctrl-C it stops everything and prints a summary.
    """
    from stream.tools.demo import run_demo

    quiet_client_logs()
    code = run_demo(duration_s=duration, rate=rate, seed=seed, broker_url=broker, window_s=window_s)
    sys.exit(code)


@cli.command()
def keygen() -> None:
    """Print a new random 256-bit key, for STREAM_MONITOR_TEXT_KEY or STREAM_MONITOR_HASH_KEY."""
    import base64

    from stream.privacy.protect import generate_key

    click.echo(base64.urlsafe_b64encode(generate_key()).decode())


for command in (alerts, report, route, stats, tensorboard, profile):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="stream-monitor")


if __name__ == "__main__":
    main()

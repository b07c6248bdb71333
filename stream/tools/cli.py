"""The ``stream-monitor`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from functools import wraps
from typing import Any

import click
import orjson

from stream.kafka.embedded_broker import BrokerUnavailable, EmbeddedBroker
from stream.kafka.topics import BrokerUnreachable, TopicMismatch
from stream.monitoring.profiles import ProfileError
from stream.settings import ConfigError, Settings

BROKER_HELP = "Kafka to use, as kafka://HOST:PORT (env STREAM_MONITOR_BROKER)."
_CLEAR_ERRORS = (ConfigError, BrokerUnavailable, BrokerUnreachable, TopicMismatch, LookupError, ProfileError)


def one_line_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors an operator can fix into one line and exit code 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _CLEAR_ERRORS as exc:
            message = str(exc)
            click.echo(f"stream-monitor: error: {message}", err=True)
            sys.exit(2)

    return wrapper


def settings_from(**options: Any) -> Settings:
    """Settings from the environment with the command's options on top."""
    return Settings.from_env(**options)


def _quiet_client_logs() -> None:
    # aiokafka logs every failed connection attempt at ERROR; the CLI reports
    # an unreachable broker itself, once.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


broker_option = click.option("--broker", envvar="STREAM_MONITOR_BROKER", help=BROKER_HELP)
partitions_option = click.option(
    "--partitions", type=int, help="Partitions per topic (env STREAM_MONITOR_PARTITIONS; 4)."
)
app_id_option = click.option("--app-id", help="Faust app id, also the consumer group (env STREAM_MONITOR_APP_ID).")
connect_timeout_option = click.option(
    "--connect-timeout",
    "connect_timeout_s",
    type=float,
    help="Seconds to keep trying to reach Kafka before giving up (env STREAM_MONITOR_CONNECT_TIMEOUT_S; 120).",
)


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
@one_line_errors
def broker(port: int, host: str) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, in memory) in the foreground."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedBroker(port=port, host=host) as embedded:
        click.echo(f"broker ready at {embedded.url} (in memory; Ctrl-C stops it)")
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

    _quiet_client_logs()
    settings = settings_from(broker=broker, partitions=partitions, app_id=app_id, connect_timeout_s=connect_timeout_s)
    result = ensure_topics_sync(settings)
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

    GET /health on the web server answers {"ready": true} once partitions are
    assigned and table state is recovered.
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
@click.option("--duration", type=float, default=60.0, show_default=True, help="Seconds to run.")
@click.option("--rate", type=float, default=300.0, show_default=True, help="Events per second.")
@click.option("--seed", type=int, default=None, help="Random seed for repeatable traffic.")
@click.option("--topic", default=None, help="Inference events topic (inference-events).")
@one_line_errors
def simulate(broker: str | None, duration: float, rate: float, seed: int | None, topic: str | None) -> None:
    """Produce realistic traffic for three models with scripted incidents."""
    from rich.progress import Progress

    from stream.sdk.client import MonitorClient
    from stream.tools.simulator import DEFAULT_INCIDENTS, TrafficSimulator
    from stream.tools.simulator import simulate as run_sim

    _quiet_client_logs()
    settings = settings_from(broker=broker, topic_events=topic)
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
@broker_option
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new alerts.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest alert kept.")
@click.option("--topic", default=None, help="Alerts topic (monitor-alerts).")
@one_line_errors
def alerts(broker: str | None, follow: bool, as_json: bool, from_beginning: bool, topic: str | None) -> None:
    """Print alerts from the alerts topic: readable lines, or --json for machines.

    Without --follow it prints the alerts kept so far and exits.
    """
    from stream.contracts.alert_messages import format_alert
    from stream.kafka.follow import TopicReader

    _quiet_client_logs()
    settings = settings_from(broker=broker, topic_alerts=topic)

    async def main() -> None:
        start_at_beginning = from_beginning or not follow
        async with TopicReader.alerts(settings, from_beginning=start_at_beginning) as reader:
            async for record in reader.records(timeout_s=None if follow else 2.0):
                if as_json:
                    click.echo(record.value.decode())
                    continue
                try:
                    click.echo(format_alert(orjson.loads(record.value)))
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    click.echo(f"(unreadable alert at offset {record.offset})")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@cli.command()
@broker_option
@click.option("--output", "-o", default="alerts.png", show_default=True, type=click.Path(dir_okay=False))
@click.option("--model", "models", multiple=True, help="Only these models (glob patterns; repeatable).")
@click.option("--hours", type=float, default=None, help="Only alerts of the last N hours of event time.")
@click.option("--topic", default=None, help="Alerts topic (monitor-alerts).")
@one_line_errors
def report(broker: str | None, output: str, models: tuple[str, ...], hours: float | None, topic: str | None) -> None:
    """Draw the alerts kept on the alerts topic as a PNG timeline, for postmortems."""
    import fnmatch
    import time
    from pathlib import Path

    from rich.console import Console

    from stream.kafka.follow import TopicReader
    from stream.tools.report import plot_timeline

    _quiet_client_logs()
    settings = settings_from(broker=broker, topic_alerts=topic)
    console = Console(stderr=True)
    since = time.time() - hours * 3600 if hours else None

    async def read() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        with console.status("reading alerts…") as status:
            async with TopicReader.alerts(settings, from_beginning=True) as reader:
                seen = 0
                async for record in reader.records(timeout_s=2.0):
                    seen += 1
                    status.update(f"reading alerts… {seen} read, {len(found)} kept")
                    try:
                        alert = orjson.loads(record.value)
                        if not isinstance(alert, dict):
                            continue
                        if models and not any(fnmatch.fnmatchcase(str(alert.get("model")), m) for m in models):
                            continue
                        if since is not None and alert["event_time"] < since:
                            continue
                        found.append(alert)
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
        return found

    alerts = asyncio.run(read())
    try:
        spans = plot_timeline(alerts, Path(output), title=f"alerts on {settings.topics.alerts}")
    except KeyError as exc:
        raise ConfigError(f"an alert lacks {exc}; is {settings.topics.alerts} an alerts topic?") from None
    click.echo(f"wrote {output}: {len(spans)} alert periods from {len(alerts)} alerts")


@cli.command()
@broker_option
@app_id_option
@click.option("--routes", "routes_file", type=click.Path(dir_okay=False), help="TOML file of [[routes]] tables.")
@click.option("--webhook", multiple=True, help="URL to POST each alert to as JSON (repeatable).")
@click.option("--alertmanager", multiple=True, help="Alertmanager API URL, e.g. http://am:9093/api/v2/alerts.")
@click.option("--model", "models", multiple=True, help="Only these models (glob patterns; repeatable).")
@click.option("--kind", "kinds", multiple=True, help="Only these alert kinds (repeatable).")
@click.option("--min-severity", default="info", show_default=True, help="info, warning or critical.")
@click.option("--attempts", type=int, default=5, show_default=True, help="Tries per alert and route.")
@click.option("--from-beginning", is_flag=True, help="Route the alerts kept so far too (default: only new ones).")
@click.option("--topic", default=None, help="Alerts topic (monitor-alerts).")
@one_line_errors
def route(
    broker: str | None,
    app_id: str | None,
    routes_file: str | None,
    webhook: tuple[str, ...],
    alertmanager: tuple[str, ...],
    models: tuple[str, ...],
    kinds: tuple[str, ...],
    min_severity: str,
    attempts: int,
    from_beginning: bool,
    topic: str | None,
) -> None:
    """Forward alerts to HTTP webhooks and Alertmanager, with retries.

    Alerts that cannot be delivered go to the dead-letter topic with the
    route and the receiver's last answer. Runs until Ctrl-C or SIGTERM.
    """
    from stream.tools.route import RetryPolicy, Router, load_routes, route_from

    _quiet_client_logs()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = settings_from(broker=broker, app_id=app_id, topic_alerts=topic)
    routes = load_routes(routes_file) if routes_file else []
    filters = {"models": list(models), "kinds": list(kinds), "min_severity": min_severity}
    for i, url in enumerate(webhook):
        routes.append(route_from({"url": url, "format": "json", **filters}, f"--webhook[{i}]"))
    for i, url in enumerate(alertmanager):
        routes.append(route_from({"url": url, "format": "alertmanager", **filters}, f"--alertmanager[{i}]"))
    if not routes:
        raise ConfigError("route: give --routes FILE, --webhook URL or --alertmanager URL")
    if attempts < 1:
        raise ConfigError(f"attempts: {attempts} must be at least 1")

    def said(r: Any, alert: dict[str, Any], outcome: Any) -> None:
        state = "delivered" if outcome.ok else "UNDELIVERABLE"
        click.echo(
            f"{state} {alert.get('model')} {alert.get('kind')} {alert.get('status')} -> {r.name} "
            f"({outcome.last}, {outcome.attempts} attempt{'s' if outcome.attempts != 1 else ''})"
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        router = Router(
            settings, routes, from_beginning=from_beginning, policy=RetryPolicy(attempts=attempts), on_delivery=said
        )
        click.echo(f"routing alerts from {settings.topics.alerts} to {len(routes)} route(s)", err=True)
        stats = await router.run(stop)
        click.echo(
            f"routed {stats.alerts} alerts: {stats.delivered} deliveries, {stats.retries} retries, "
            f"{stats.undeliverable} undeliverable, {stats.filtered} matched no route",
            err=True,
        )

    asyncio.run(main())


@cli.command()
@click.option("--duration", type=float, default=60.0, show_default=True, help="Seconds to run.")
@click.option("--rate", type=float, default=300.0, show_default=True, help="Events per second.")
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

    _quiet_client_logs()
    code = run_demo(duration_s=duration, rate=rate, seed=seed, broker_url=broker, window_s=window_s)
    sys.exit(code)


@cli.command()
@click.argument("model", required=False)
@click.option(
    "--url",
    envvar="STREAM_MONITOR_URL",
    default="http://127.0.0.1:6066",
    show_default=True,
    help="A worker's web address (any worker: queries are routed). Env STREAM_MONITOR_URL.",
)
@click.option("--window", type=click.Choice(["tumbling", "hopping"]), default="tumbling", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the worker's JSON as it is.")
@click.option("--token", envvar="STREAM_MONITOR_WEB_TOKEN", help="Bearer token, if the worker requires one.")
@one_line_errors
def stats(model: str | None, url: str, window: str, as_json: bool, token: str | None) -> None:
    """Show MODEL's window statistics, or list the models when MODEL is left out."""
    import json
    import urllib.parse

    from stream.tools.stats_view import print_stats, render_models

    path = f"/models/{urllib.parse.quote(model, safe='')}/stats?window={window}" if model else "/models"
    data = _get_json(url, path, token)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif model:
        print_stats(data)
    else:
        from rich.console import Console

        Console().print(render_models(data["models"]))


def _get_json(url: str, path: str, token: str | None) -> Any:
    """GET a worker's JSON page; an unreachable worker or an HTTP error is a one-line LookupError."""
    import json
    import urllib.error
    import urllib.request

    base = url.rstrip("/")
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError):
            detail = json.loads(detail)["error"]
        raise LookupError(f"{base}{path}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise LookupError(f"no worker answers at {base} ({exc}); pass --url http://HOST:PORT") from None


@cli.command()
@click.option(
    "--url",
    envvar="STREAM_MONITOR_URL",
    default="http://127.0.0.1:6066",
    show_default=True,
    help="A worker's web address (it gathers every worker's models). Env STREAM_MONITOR_URL.",
)
@click.option("--token", envvar="STREAM_MONITOR_WEB_TOKEN", help="Bearer token, if the worker requires one.")
@click.option("--logdir", default="runs/stream-monitor", show_default=True, help="TensorBoard log directory.")
@click.option("--interval", type=float, default=15.0, show_default=True, help="Seconds between polls.")
@click.option("--once", is_flag=True, help="Write what is there now and exit.")
@one_line_errors
def tensorboard(url: str, token: str | None, logdir: str, interval: float, once: bool) -> None:
    """Write every model's closed windows as TensorBoard scalars (one run per model version)."""
    import time

    from stream.tools.tensorboard import TensorBoardExport

    try:
        export = TensorBoardExport(logdir)
    except ImportError as exc:
        raise ConfigError(str(exc)) from None
    try:
        while True:
            written = export.write(_get_json(url, "/api/status", token))
            click.echo(f"{written} scalars written to {logdir} ({len(export.writers)} runs)", err=True)
            if once:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        export.close()


@cli.command()
def keygen() -> None:
    """Print a new random 256-bit key, for STREAM_MONITOR_TEXT_KEY or STREAM_MONITOR_HASH_KEY."""
    import base64

    from stream.privacy.protect import generate_key

    click.echo(base64.urlsafe_b64encode(generate_key()).decode())


@cli.group()
def profile() -> None:
    """Reference profiles: the baseline drift and data quality are judged against."""


@profile.command("build")
@click.argument("events_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", required=True, help="Model whose events to summarise.")
@click.option("--model-version", default=None, help="Only this version (default: all versions).")
@click.option(
    "--profile-dir",
    envvar="STREAM_MONITOR_PROFILE_DIR",
    default="profiles",
    show_default=True,
    help="Folder the worker reads profiles from (env STREAM_MONITOR_PROFILE_DIR).",
)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Write here instead.")
@one_line_errors
def profile_build(
    events_file: str, model: str, model_version: str | None, profile_dir: str, out_path: str | None
) -> None:
    """Build a profile from EVENTS_FILE: inference events, one JSON object per line.

    Lines that are not valid events are skipped and counted.
    """
    from pathlib import Path

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from stream.contracts.schemas import SchemaError, validate
    from stream.monitoring.profiles import build_profile, profile_path

    path = Path(events_file)
    skipped = 0

    def events(progress: Progress, task: Any):
        nonlocal skipped
        with path.open("rb") as f:
            for line in f:
                progress.advance(task, len(line))
                if not line.strip():
                    continue
                try:
                    event = orjson.loads(line)
                    validate("inference-event", event)
                except (orjson.JSONDecodeError, SchemaError):
                    skipped += 1
                    continue
                yield event

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn()) as progress:
        task = progress.add_task(f"reading {path.name}", total=path.stat().st_size)
        built = build_profile(events(progress, task), model, model_version, source=f"file:{path.name}")
    target = Path(out_path) if out_path else profile_path(Path(profile_dir), model, model_version)
    built.save(target)
    click.echo(
        f"profile of {model}{' ' + model_version if model_version else ''}: {built.events:,} events, "
        f"{len(built.stats.features.features)} features -> {target}"
        + (f" ({skipped:,} invalid lines skipped)" if skipped else "")
    )


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="stream-monitor")


if __name__ == "__main__":
    main()

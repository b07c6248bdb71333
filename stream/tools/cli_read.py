"""Commands that read what the monitor produced, or build what it compares against: alerts, reports, stats, profiles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import click
import orjson

from stream.settings import ConfigError
from stream.tools.cli_options import (
    app_id_option,
    broker_option,
    one_line_errors,
    quiet_client_logs,
    require_kafka,
    settings_from,
)


@click.command()
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

    quiet_client_logs()
    settings = settings_from(broker=broker, topic_alerts=topic)
    require_kafka(settings)

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


@click.command()
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

    quiet_client_logs()
    settings = settings_from(broker=broker, topic_alerts=topic)
    require_kafka(settings)
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


@click.command()
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
@click.option(
    "--resend",
    "resend_s",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds between sending Alertmanager the alerts still firing (keep it below its resolve_timeout).",
)
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
    resend_s: float,
    topic: str | None,
) -> None:
    """Forward alerts to HTTP webhooks and Alertmanager, with retries.

    Alerts that cannot be delivered go to the dead-letter topic with the
    route and the receiver's last answer. Runs until Ctrl-C or SIGTERM.
    """
    from stream.tools.route import RetryPolicy, Router, load_routes, route_from

    quiet_client_logs()
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
    require_kafka(settings)

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
            settings,
            routes,
            from_beginning=from_beginning,
            policy=RetryPolicy(attempts=attempts),
            on_delivery=said,
            resend_s=resend_s,
        )
        click.echo(f"routing alerts from {settings.topics.alerts} to {len(routes)} route(s)", err=True)
        stats = await router.run(stop)
        click.echo(
            f"routed {stats.alerts} alerts: {stats.delivered} deliveries, {stats.retries} retries, "
            f"{stats.undeliverable} undeliverable, {stats.filtered} matched no route, "
            f"{stats.resent} firing alerts sent again to Alertmanager",
            err=True,
        )

    asyncio.run(main())


@click.command()
@click.argument("model", required=False)
@click.option(
    "--url",
    envvar="STREAM_MONITOR_URL",
    default="http://127.0.0.1:6066",
    show_default=True,
    help="A worker's web address (any worker: queries are routed). Env STREAM_MONITOR_URL.",
)
@click.option("--window", type=click.Choice(["tumbling", "hopping"]), default="tumbling", show_default=True)
@click.option("--segments", is_flag=True, help="MODEL's segments instead: one row per segment of each version.")
@click.option("--json", "as_json", is_flag=True, help="Print the worker's JSON as it is.")
@click.option("--token", envvar="STREAM_MONITOR_WEB_TOKEN", help="Bearer token, if the worker requires one.")
@one_line_errors
def stats(model: str | None, url: str, window: str, segments: bool, as_json: bool, token: str | None) -> None:
    """Show MODEL's window statistics (or its segments), or list the models when MODEL is left out."""
    import json
    import urllib.parse

    from stream.tools.stats_view import print_segments, print_stats, render_models

    if segments and not model:
        raise click.UsageError("--segments needs a MODEL")
    page = "segments" if segments else f"stats?window={window}"
    path = f"/models/{urllib.parse.quote(model, safe='')}/{page}" if model else "/models"
    data = _get_json(url, path, token)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif segments:
        print_segments(data)
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


@click.command()
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


@click.group()
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

"""``stream-monitor demo``: broker, worker and traffic in one command.

It starts the embedded broker (or uses ``--broker``), one worker in a child
process and the traffic simulator, prints alerts as they arrive under a live
view, and ends with a summary that says which scripted incidents were
caught and how fast. Exit code 0 when the latency incident was caught.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table

from stream.contracts.alert_messages import format_alert
from stream.kafka.embedded_broker import EmbeddedBroker
from stream.kafka.follow import TopicReader
from stream.kafka.topics import ensure_topics, required_topics
from stream.sdk.client import MonitorClient
from stream.settings import Settings
from stream.tools.simulator import DEFAULT_INCIDENTS, Incident, SimulationReport, TrafficSimulator, simulate
from stream.web.status import incidents
from stream.worker.child_process import WorkerProcess


@dataclass(slots=True)
class DemoState:
    """What the live view and the summary show."""

    duration_s: float
    started: float = field(default_factory=time.monotonic)
    progress: float = 0.0
    sent_by_model: Counter[str] = field(default_factory=Counter)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    report: SimulationReport | None = None
    run_started_at: float = field(default_factory=time.time)


def _incident_state(incident: Incident, progress: float) -> str:
    if progress < incident.start:
        return "pending"
    return "ACTIVE" if incident.active(progress) else "over"


def _caught(incident: Incident, alerts: list[dict[str, Any]]) -> dict[str, Any] | None:
    for alert in alerts:
        if alert["model"] == incident.model and alert["signal"] == incident.signal and alert["status"] == "firing":
            return alert
    return None


def _view(state: DemoState, worker_url: str) -> Group:
    elapsed = time.monotonic() - state.started
    models = Table(title="traffic", expand=True)
    models.add_column("model", overflow="fold")
    models.add_column("events sent", justify="right")
    models.add_column("events/s", justify="right")
    models.add_column("alerts", justify="right")
    alerts_by_model = Counter(a["model"] for a in state.alerts if a["status"] == "firing")
    for model, count in sorted(state.sent_by_model.items()):
        models.add_row(model, f"{count:,}", f"{count / max(elapsed, 1e-9):,.0f}", str(alerts_by_model[model]))
    incidents = Table(title="scripted incidents", expand=True)
    for column in ("incident", "model", "when", "state", "caught"):
        incidents.add_column(column, overflow="fold")
    for inc in DEFAULT_INCIDENTS:
        caught = _caught(inc, state.alerts)
        incidents.add_row(
            inc.name,
            inc.model,
            f"{inc.start * state.duration_s:.0f}-{min(inc.end, 1) * state.duration_s:.0f} s",
            _incident_state(inc, state.progress),
            "yes" if caught else "-",
        )
    recent = "\n".join(format_alert(a) for a in state.alerts[-6:]) or "(no alerts yet)"
    header = f"stream-monitor demo: {elapsed:5.1f} / {state.duration_s:g} s   live page {worker_url}/   Ctrl-C stops"
    progress = ProgressBar(total=state.duration_s, completed=min(elapsed, state.duration_s))
    return Group(header, progress, models, incidents, Panel(recent, title=f"alerts ({len(state.alerts)})"))


async def _run(
    console: Console,
    settings: Settings,
    worker: WorkerProcess,
    duration_s: float,
    rate: float,
    seed: int,
) -> DemoState:
    state = DemoState(duration_s=duration_s)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, stop.set)

    reader = TopicReader.alerts(settings)
    await reader.start()

    async def collect_alerts() -> None:
        async for record in reader.records():
            alert = orjson.loads(record.value)
            state.alerts.append(alert)
            console.print(f"[bold red]ALERT[/] {format_alert(alert)}", highlight=False)

    collector = asyncio.create_task(collect_alerts())
    client = MonitorClient(settings.broker, topic=settings.topics.events, kafka_options=settings.kafka_options())
    await client.start()
    raw = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **settings.kafka_options())
    await raw.start()

    def send(event: dict[str, Any]) -> None:
        state.sent_by_model[event["model"]] += 1
        client.record_event(event)

    async def send_malformed(key: bytes, value: bytes) -> None:
        await raw.send_and_wait(settings.topics.events, key=key, value=value)

    def on_tick(progress: float, report: SimulationReport) -> None:
        state.progress = progress

    try:
        with Live(_view(state, worker.url), console=console, refresh_per_second=4) as live:

            async def refresh() -> None:
                while True:
                    live.update(_view(state, worker.url))
                    await asyncio.sleep(0.25)

            refresher = asyncio.create_task(refresh())
            state.report = await simulate(
                send,
                duration_s=duration_s,
                rate=rate,
                simulator=TrafficSimulator(seed=seed),
                send_malformed=send_malformed,
                on_tick=on_tick,
                stop=stop,
            )
            await client.flush(10.0)
            # Give the worker a moment to process the tail and publish alerts.
            await _wait_processed(worker, client.stats.sent, timeout_s=15.0)
            await asyncio.sleep(1.0)
            refresher.cancel()
            live.update(_view(state, worker.url))
        console.print()
    finally:
        await client.close()
        await raw.stop()
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        await reader.stop()
    state.sent_by_model.update({"(sdk dropped)": client.stats.dropped} if client.stats.dropped else {})
    return state


async def _wait_processed(worker: WorkerProcess, events: int, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        health = await loop.run_in_executor(None, worker.health)
        if health and health.get("events", 0) >= events:
            return
        await asyncio.sleep(0.25)


def _summary(console: Console, state: DemoState, health: dict[str, Any] | None, worker: WorkerProcess) -> bool:
    report = state.report
    table = Table(title="demo summary")
    table.add_column("what")
    table.add_column("value", justify="right")
    if report is not None:
        table.add_row("events sent", f"{report.events:,} in {report.duration_s:.1f} s")
        table.add_row("malformed records sent", str(report.malformed))
    if health:
        table.add_row("events processed by the worker", f"{health.get('events', 0):,}")
        table.add_row("records dead-lettered", str(health.get("dead_letters", 0)))
    table.add_row("alerts received", str(len(state.alerts)))
    console.print(table)

    rows = sorted(incidents(state.alerts), key=lambda r: r["since"])
    if rows:
        by_start = Table(title="incidents, by start")
        for column in ("started", "model", "signal", "detectors", "severity", "now", "alerts"):
            # Long model and signal names wrap instead of being cut at 80 columns.
            by_start.add_column(column, overflow="fold")
        for row in rows:
            by_start.add_row(
                time.strftime("%H:%M:%S", time.gmtime(row["since"])),
                row["model"],
                row["signal"],
                ", ".join(row["detectors"]),
                row["severity"],
                row["now"],
                str(row["alerts"]),
            )
        console.print(by_start)

    latency_caught = False
    for incident in DEFAULT_INCIDENTS:
        alert = _caught(incident, state.alerts)
        began = state.run_started_at + incident.start * state.duration_s
        if alert is not None:
            delay = alert["event_time"] - began
            console.print(
                f"[green]caught[/] {incident.name} on {incident.model} ({incident.signal}): "
                f"alert {delay:.1f} s after the incident began"
            )
            if incident.name == "latency_spike":
                latency_caught = True
        elif state.progress < incident.start:
            console.print(f"[yellow]not reached[/] {incident.name}: the run stopped before it began")
        else:
            console.print(
                f"[yellow]not caught[/] {incident.name} on {incident.model} ({incident.signal}): "
                "no alert on this signal during the run"
            )
    console.print(f"worker log: {worker.log_path}")
    return latency_caught


def run_demo(
    *,
    duration_s: float = 60.0,
    rate: float = 300.0,
    seed: int = 7,
    broker_url: str | None = None,
    window_s: float | None = None,
    console: Console | None = None,
) -> int:
    """Run the demo; return the process exit code."""
    console = console or Console()
    # Windows are whole seconds that divide the 60 s hop of the hopping view.
    window = window_s or next(w for w in (60, 30, 20, 15, 10, 5) if w <= max(5.0, duration_s / 6))
    broker: EmbeddedBroker | None = None
    worker: WorkerProcess | None = None
    try:
        if broker_url is None:
            with console.status("starting the embedded Kafka-protocol broker"):
                broker = EmbeddedBroker().start()
            broker_url = broker.url
            console.print(f"embedded broker at {broker_url}")
        # A fresh app id is a fresh consumer group: rejoining an old one is slow.
        settings = Settings.from_env(
            broker=broker_url, app_id=f"stream-monitor-demo-{uuid.uuid4().hex[:8]}", window_s=window
        )
        asyncio.run(ensure_topics(settings.bootstrap_servers, required_topics(settings), settings.connect_timeout_s))
        worker = WorkerProcess(broker_url, app_id=settings.app_id, extra_args=("--window", f"{window:g}"))
        with console.status(f"starting a worker (log: {worker.log_path})"):
            worker.start()
        console.print(f"worker ready at {worker.url} ({window:g} s windows)")
        state = asyncio.run(_run(console, settings, worker, duration_s, rate, seed))
        health = worker.health()
        caught = _summary(console, state, health, worker)
        return 0 if caught else 1
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()

"""A real Prometheus scrapes a running worker with the shipped config: the per-model series
arrive with the right labels and values, the shipped rules load and evaluate, and every
query of every Grafana panel in deploy/ returns data during an incident.

Prometheus comes from Debian's ``prometheus`` package (installed when missing). Only the
service discovery of the shipped config is replaced (compose resolves the ``worker`` name;
here the worker is one local port) and the intervals are shortened to a second.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import yaml
from aiokafka import AIOKafkaProducer

from stream.kafka.embedded_broker import free_port
from stream.sdk.client import make_event
from tests.debian import debian_program

from .conftest import isolated_settings
from .helpers import publish, wait_for_events
from .test_detection import events

DEPLOY = Path(__file__).parents[2] / "deploy"
MODEL = "fraud"


def grafana_queries() -> list[tuple[str, str]]:
    """(dashboard/panel, PromQL) for every target of every panel of the shipped dashboards."""
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{path.stem}/{panel['title']}", target["expr"]))
    return out


def template_queries() -> list[tuple[str, str]]:
    """(variable, its label_values(...) query) of the shipped dashboards."""
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for variable in json.loads(path.read_text()).get("templating", {}).get("list", []):
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            out.append((variable["name"], query))
    return out


def shipped_config_for(target: str, tmp: Path) -> Path:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DEPLOY / "prometheus" / pattern) for pattern in config["rule_files"]]
    config.pop("alerting")  # no Alertmanager in this test
    [job] = config["scrape_configs"]
    assert job["job_name"] == "stream-monitor" and job["metrics_path"] == "/metrics"
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [target]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    def __init__(self, binary: str, config: Path, data: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data.parent / "prometheus.log"
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )
        deadline = time.monotonic() + 60
        while not self.ready():
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            assert time.monotonic() < deadline, "Prometheus never became ready"
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> dict | list:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return data["result"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def numbers(result: list[dict]) -> list[float]:
    return [float(sample["value"][1]) for sample in result if not math.isnan(float(sample["value"][1]))]


def worker_stats(worker) -> dict:
    with urllib.request.urlopen(f"{worker.url}/models/{MODEL}/stats", timeout=5) as response:
        return json.loads(response.read())


async def incident(iso) -> int:
    """A classifier's traffic with a drifting input, a latency spike, wrong labels and a broken record."""
    rng = np.random.default_rng(7)
    # On a window boundary, so that the window in progress holds 10 s of the drifted input.
    t0 = math.floor((time.time() - 90) / 10) * 10
    quiet = events(MODEL, 1000, t0, rng, request_prefix="req", prediction=lambda i: i % 2)
    shifted = events(MODEL, 1200, t0 + 20, rng, shift=1.5, rate=30.0)
    spike = [make_event(MODEL, "1", 900.0 + i, 0, timestamp=t0 + 55 + i * 0.01) for i in range(20)]
    await publish(iso, quiet + shifted + spike)
    producer = AIOKafkaProducer(bootstrap_servers=iso.settings.bootstrap_servers)
    await producer.start()
    try:
        for i in range(400):
            truth = i % 2 if i < 200 else 1 - i % 2
            label = {"schema_version": 1, "request_id": f"req-{i}", "model": MODEL, "label": truth}
            label["timestamp"] = time.time()  # labels come after their predictions
            await producer.send(iso.settings.topics.labels, key=MODEL.encode(), value=orjson.dumps(label))
        for _ in range(2):
            await producer.send_and_wait(iso.settings.topics.events, key=MODEL.encode(), value=b"{not json")
            await asyncio.sleep(2)
    finally:
        await producer.stop()
    return len(quiet) + len(shifted) + len(spike)


def eventually(check, timeout_s: float = 90.0, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while True:
        failed = check()
        if not failed:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {failed}")
        time.sleep(1)


def test_prometheus_scrapes_the_worker_and_every_grafana_query_returns_data(broker, tmp_path):
    binary = debian_program("prometheus", "prometheus")
    iso = isolated_settings(broker, zscore_warmup=100, window_s=10.0)
    env = {
        "STREAM_MONITOR_WINDOW_S": "10",
        "STREAM_MONITOR_JOIN_PREDICTIONS": "always",
        "STREAM_MONITOR_PERFORMANCE_WINDOW": "100",
    }
    worker = iso.worker(env_extra=env)
    worker.start()
    target = worker.url.removeprefix("http://")
    prometheus = Prometheus(binary, shipped_config_for(target, tmp_path), tmp_path / "data")
    try:
        # Traffic only once Prometheus scrapes: rates need the counters to move between two scrapes.
        eventually(lambda: not prometheus.query("up"), what=f"no scrape: {prometheus.api('targets')}")
        sent = asyncio.run(incident(iso))
        wait_for_events(worker, sent)

        # The scrape works, and the counters Prometheus stores are the worker's own.
        [up] = prometheus.query('up{job="stream-monitor"}')
        assert up["metric"]["instance"] == target and up["value"][1] == "1"
        eventually(
            lambda: numbers(prometheus.query(f'stream_monitor_events_processed_total{{model="{MODEL}"}}')) != [sent],
            what="events processed",
        )
        eventually(
            lambda: numbers(prometheus.query('stream_monitor_dead_letters_total{error_type="invalid_json"}')) != [2],
            what="dead letters",
        )
        eventually(
            lambda: worker_stats(worker)["versions"]["1"]["performance"]["labelled"] != 400, what="labels joined"
        )
        expected = worker_stats(worker)["versions"]["1"]["performance"]["metrics"]["accuracy"]
        assert expected < 0.8  # half the labels disagree with the predictions

        def accuracy_differs() -> list:
            found = prometheus.query(f'stream_monitor_performance{{model="{MODEL}",metric="accuracy"}}')
            return (
                []
                if [(s["metric"]["model_version"], float(s["value"][1])) for s in found] == [("1", expected)]
                else found
            )

        eventually(accuracy_differs, what="accuracy in Prometheus")
        drifted = prometheus.query(f'stream_monitor_drift_psi{{model="{MODEL}",signal="features.b"}}')
        steady = prometheus.query(f'stream_monitor_drift_psi{{model="{MODEL}",signal="features.a"}}')
        assert float(drifted[0]["value"][1]) > 5 * float(steady[0]["value"][1])

        # Every panel and variable of the shipped dashboards, as Grafana would send them.
        def empty_panels() -> list[str]:
            missing = []
            for panel, expr in grafana_queries():
                expr = expr.replace("$model", MODEL).replace("$version", ".*")
                if not numbers(prometheus.query(expr)):
                    missing.append(f"{panel}: {expr}")
            for name, query in template_queries():
                series = query.removeprefix("label_values(").removesuffix(")").rsplit(",", 1)[0]
                label = query.rsplit(",", 1)[1].strip(" )")
                series = series.replace("$model", MODEL)
                values = prometheus.api(f"label/{label}/values", **{"match[]": series})
                if not values:
                    missing.append(f"variable {name}: {query}")
            return missing

        eventually(empty_panels, what="Grafana queries that return nothing during the incident")

        # The shipped rules loaded, evaluate without error, and the recording rules carry the model.
        groups = prometheus.api("rules")["groups"]
        assert [g["name"] for g in groups] == ["stream-monitor"] and len(groups[0]["rules"]) == 10
        broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
        assert not broken
        eventually(
            lambda: not numbers(prometheus.query(f'model:stream_monitor_events_processed:rate1m{{model="{MODEL}"}}')),
            what="recording rule",
        )
        # A healthy worker with a dead-letter trickle raises none of the monitor's own alerts.
        assert prometheus.api("alerts")["alerts"] == []
    finally:
        prometheus.stop()
        worker.stop()

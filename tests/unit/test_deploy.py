"""The production files: compose, Prometheus and Grafana provisioning agree with the code."""

import re
from pathlib import Path

import orjson
import yaml

from stream.config import Settings, parse_broker_url
from stream.metrics import PREFIX, WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())


def test_compose_has_the_four_services():
    assert set(COMPOSE["services"]) == {"kafka", "worker", "prometheus", "grafana"}


def test_every_mounted_file_exists():
    for name, service in COMPOSE["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_worker_reaches_kafka_on_its_internal_listener():
    kafka_env = COMPOSE["services"]["kafka"]["environment"]
    worker_env = COMPOSE["services"]["worker"]["environment"]
    bootstrap = parse_broker_url(worker_env["STREAM_MONITOR_BROKER"])
    assert f"PLAINTEXT://{bootstrap}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # The worker's settings from this environment are valid.
    env = {k: str(v) for k, v in worker_env.items()}
    settings = Settings.from_env(env)
    assert settings.web_host == "0.0.0.0"


def test_prometheus_scrapes_the_worker_port():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    port = int(COMPOSE["services"]["worker"]["environment"]["STREAM_MONITOR_WEB_PORT"])
    assert job["dns_sd_configs"][0]["port"] == port


def test_dashboards_use_only_exported_metric_names():
    metrics = WorkerMetrics()
    metrics.events.labels(model="m").inc()
    metrics.dead_letters.labels(error_type="invalid_json").inc()
    metrics.alerts.labels(model="m", kind="anomaly", severity="warning").inc()
    exported = set(re.findall(rf"^({PREFIX}_\w+?)(?:{{| )", metrics.render().decode(), re.M))
    dashboards = list((ROOT / "deploy/grafana/dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        dashboard = orjson.loads(path.read_bytes())
        assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                used = set(re.findall(rf"{PREFIX}_\w+", target["expr"]))
                assert used and used <= exported, f"{path.name}: {used - exported}"

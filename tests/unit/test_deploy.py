"""The production files: compose, Prometheus and Grafana provisioning agree with the code."""

import re
from pathlib import Path

import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stream.settings import Settings, parse_broker_url
from stream.web.exporter import ModelSeriesCollector
from stream.web.metrics import PREFIX, ModelLabelCap, WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())


def test_compose_has_its_services():
    assert set(COMPOSE["services"]) == {"kafka", "worker", "route", "alertmanager", "prometheus", "grafana"}


def test_workers_scale_up_to_the_partition_count_without_port_collisions():
    worker = COMPOSE["services"]["worker"]
    [mapping] = worker["ports"]
    host, container = mapping.split(":")
    first, last = (int(p) for p in host.split("-"))
    assert int(container) == int(worker["environment"]["STREAM_MONITOR_WEB_PORT"])
    assert last - first + 1 >= int(worker["environment"]["STREAM_MONITOR_PARTITIONS"])


def test_the_image_installs_the_monitor_not_only_the_sdk():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install [^\n]*'\.\[worker\]'", dockerfile)


def test_route_sends_to_the_alertmanager_of_the_compose_file_grouped_by_incident():
    route = COMPOSE["services"]["route"]
    [target] = [arg for arg in route["command"] if arg.startswith("http://")]
    assert target.startswith("http://alertmanager:9093/")
    assert parse_broker_url(route["environment"]["STREAM_MONITOR_BROKER"]) == "kafka:19092"
    config = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    assert "incident" in config["route"]["group_by"]
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    assert {r["receiver"] for r in config["route"].get("routes", [])} <= receivers


def test_the_readme_gives_containers_the_internal_listener():
    readme = (ROOT / "README.md").read_text()
    internal = parse_broker_url(COMPOSE["services"]["worker"]["environment"]["STREAM_MONITOR_BROKER"])
    assert f"kafka://{internal}" in readme
    assert 'MonitorClient("kafka://kafka:9092"' not in readme


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


def exported_names() -> set[str]:
    """Every series name a worker exports, counters and the per-model collector included."""
    metrics = WorkerMetrics()
    metrics.events.labels(model="m").inc()
    metrics.dead_letters.labels(error_type="invalid_json").inc()
    metrics.alerts.labels(model="m", kind="anomaly", severity="warning").inc()
    metrics.processing.observe(0.01)
    collector = ModelSeriesCollector(lambda: [], lambda: [("events", 0, 3)], ModelLabelCap(10))
    metrics.registry.register(collector)
    names = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        names |= {sample.name for sample in family.samples}
        if family.type == "gauge":
            names.add(family.name)  # per-model gauges have no samples without models
    return names


DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "text", "row", "barchart", "state-timeline"}


def grafana_problems(dashboard: dict, datasource_uids: set[str]) -> list[str]:
    """What Grafana would refuse or misdraw: missing required fields, bad grid, unknown data sources or variables."""
    problems = []
    for field, kind in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list)):
        if not isinstance(dashboard.get(field), kind):
            problems.append(f"{field} missing or not {kind.__name__}")
    if len(dashboard.get("uid", "")) > 40:
        problems.append("uid longer than 40 characters")
    variables = dashboard.get("templating", {}).get("list", [])
    defined = {v.get("name") for v in variables}
    for v in variables:
        if not v.get("name") or v.get("type") not in {"query", "custom", "constant", "datasource", "interval"}:
            problems.append(f"variable {v.get('name')!r}: name and a known type needed")
        if v.get("type") == "query" and not (v.get("query") and v.get("datasource", {}).get("uid") in datasource_uids):
            problems.append(f"variable {v.get('name')!r}: a query on a provisioned data source needed")
    ids, cells = set(), set()
    for panel in dashboard.get("panels", []):
        name = f"panel {panel.get('id')} ({panel.get('title')!r})"
        if not isinstance(panel.get("id"), int) or panel["id"] in ids:
            problems.append(f"{name}: id must be a unique integer")
        ids.add(panel.get("id"))
        if panel.get("type") not in PANEL_TYPES or not panel.get("title"):
            problems.append(f"{name}: a known type and a title needed")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "hwxy") or grid["w"] < 1 or grid["h"] < 1:
            problems.append(f"{name}: gridPos needs integer h, w, x, y")
            continue
        if grid["x"] < 0 or grid["x"] + grid["w"] > 24:
            problems.append(f"{name}: wider than Grafana's 24 columns")
        columns, rows = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        mine = {(x, y) for x in columns for y in rows}
        if mine & cells:
            problems.append(f"{name}: overlaps another panel")
        cells |= mine
        if panel.get("datasource", {}).get("uid") not in datasource_uids:
            problems.append(f"{name}: data source is not the provisioned one")
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if not refs or len(set(refs)) != len(refs) or not all(t.get("expr") for t in panel["targets"]):
            problems.append(f"{name}: targets need an expr and unique refIds")
    exprs = [t.get("expr", "") for p in dashboard.get("panels", []) for t in p.get("targets", [])]
    exprs += [a.get("expr", "") for a in dashboard.get("annotations", {}).get("list", [])]
    for used in {v for e in exprs for v in re.findall(r"\$(\w+)", e)} - defined:
        problems.append(f"variable ${used} used but not defined")
    return problems


def test_dashboards_have_what_grafana_requires():
    provisioned = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in provisioned["datasources"]}
    assert {p.name for p in DASHBOARDS} >= {"overview.json", "model.json"}
    for path in DASHBOARDS:
        assert grafana_problems(orjson.loads(path.read_bytes()), uids) == [], path.name


def test_the_validator_catches_what_grafana_would_refuse():
    good = orjson.loads((ROOT / "deploy/grafana/dashboards/model.json").read_bytes())
    broken = orjson.loads(orjson.dumps(good))
    broken["panels"][1]["gridPos"] = dict(broken["panels"][0]["gridPos"])
    broken["panels"][2]["id"] = broken["panels"][3]["id"]
    broken["panels"][4]["targets"][0]["expr"] += " * on() group_left() $nowhere"
    del broken["schemaVersion"]
    problems = "\n".join(grafana_problems(broken, {"prometheus"}))
    for expected in ("overlaps another panel", "unique integer", "$nowhere used but not defined", "schemaVersion"):
        assert expected in problems


def test_model_dashboard_picks_the_model_by_variable_and_marks_alerts():
    model = orjson.loads((ROOT / "deploy/grafana/dashboards/model.json").read_bytes())
    assert [v["name"] for v in model["templating"]["list"]] == ["model", "version"]
    assert all('model="$model"' in t["expr"] for p in model["panels"] for t in p["targets"])
    [annotation] = model["annotations"]["list"]
    assert "stream_monitor_alerts_total" in annotation["expr"]


def test_dashboards_use_only_exported_metric_names():
    exported = exported_names()
    for path in DASHBOARDS:
        dashboard = orjson.loads(path.read_bytes())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
        exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]]
        for expr in exprs:
            used = set(re.findall(rf"{PREFIX}_\w+", expr))
            assert used and used <= exported, f"{path.name}: {used - exported}"


def test_the_readme_layout_names_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Development") :]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "stream").rglob("*.py"))
        if path.name != "__init__.py" and path.stem not in layout
    ]
    assert missing == []

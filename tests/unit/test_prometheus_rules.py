"""The rules shipped in deploy/prometheus load in Prometheus and do what their names say.

``promtool`` comes from Debian's ``prometheus`` package (installed when missing).
The cases are in tests/prometheus/stream-monitor-rules.test.yml: each alert fires on
its incident, at the time its ``for`` allows, and stays quiet on the case beside it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.debian import debian_program

ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules"
CASES = ROOT / "tests" / "prometheus" / "stream-monitor-rules.test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    return debian_program("promtool", "prometheus")


def run(promtool: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_rules_files_pass_promtool_check(promtool):
    files = sorted(RULES.glob("*.yml"))
    assert files
    result = run(promtool, "check", "rules", *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_shipped_scrape_config_loads_its_rules(promtool):
    config = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    assert yaml.safe_load(config.read_text())["rule_files"] == ["rules/*.yml"]
    result = run(promtool, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


def test_every_alert_has_a_case_that_fires_it(promtool):
    alerts = {
        rule["alert"]
        for path in RULES.glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = {
        check["alertname"]
        for case in yaml.safe_load(CASES.read_text())["tests"]
        for check in case.get("alert_rule_test", [])
        if check["exp_alerts"]
    }
    assert alerts == tested


def test_the_alerting_rules_fire_on_incidents_and_stay_quiet_otherwise(promtool):
    result = run(promtool, "test", "rules", CASES.name, cwd=CASES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout

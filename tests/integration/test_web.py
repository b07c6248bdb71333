"""The worker's web pages: loopback only by default, a bearer token when configured, 4xx (never 500) for bad
requests."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest

from stream.sdk.client import make_event

from .conftest import isolated_settings
from .helpers import publish, wait_for_events

TOKEN = "s3cret-token"


def call(url, token=None, method="GET"):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def guarded(broker):
    iso = isolated_settings(broker)
    worker = iso.worker(env_extra={"STREAM_MONITOR_WEB_TOKEN": TOKEN})
    worker.start()
    asyncio.run(publish(iso, [make_event("web-model", "1", 10.0 + i % 3, 0, timestamp=time.time()) for i in range(50)]))
    wait_for_events(worker, 50)
    yield worker
    worker.stop()


@pytest.mark.parametrize("path", ["/metrics", "/models", "/models/web-model/stats", "/api/status"])
def test_pages_need_the_token(guarded, path):
    status, body = call(guarded.url + path)
    assert status == 401 and b"bearer token" in body
    assert call(guarded.url + path, token="wrong")[0] == 401
    assert call(guarded.url + path, token=TOKEN)[0] == 200


def test_web_server_listens_on_loopback_only_by_default(guarded):
    sockets = [c for c in psutil.Process(guarded.pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    web = [c for c in sockets if c.laddr.port == guarded.web_port]
    assert web, f"no listening socket on port {guarded.web_port}: {sockets}"
    assert {c.laddr.ip for c in web} == {"127.0.0.1"}


def test_the_worker_says_where_its_pages_are_once_ready(guarded):
    log = guarded.log_path.read_text(errors="replace")
    lines = [line for line in log.splitlines() if "stream-monitor worker: ready" in line]
    assert len(lines) == 1
    assert f"live page {guarded.url}/" in lines[0] and f"metrics {guarded.url}/metrics" in lines[0]


def test_health_stays_open_for_probes(guarded):
    status, body = call(guarded.url + "/health")
    assert status == 200 and json.loads(body)["ready"] is True


@pytest.mark.parametrize(
    ("path", "method", "expected"),
    [
        ("/models/web-model/stats?window=weekly", "GET", 400),
        ("/models/nobody/stats", "GET", 404),
        ("/models/web-model/stats", "POST", 405),
        ("/no/such/page", "GET", 404),
        ("/table/", "GET", 404),  # Faust's own table pages would bypass the token
        ("/router/", "GET", 404),
        ("/static/..%2fweb.py", "GET", 404),
        ("/static/secrets.txt", "GET", 404),
        ("/models/%ff%fe/stats", "GET", 404),
    ],
)
def test_malformed_requests_get_4xx(guarded, path, method, expected):
    status, _ = call(guarded.url + path, token=TOKEN, method=method)
    assert status == expected


def test_stats_command_sends_the_token(guarded):
    base = [sys.executable, "-m", "stream.tools.cli", "stats", "web-model", "--url", guarded.url]
    ok = subprocess.run([*base, "--token", TOKEN, "--json"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["versions"]["1"]["events"] == 50
    denied = subprocess.run(base, capture_output=True, text=True, timeout=30)
    assert denied.returncode == 2 and "HTTP 401" in denied.stderr

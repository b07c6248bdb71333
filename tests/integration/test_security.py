"""Security and resources end to end: a bursting client, a card number in an LLM output (encrypted at
the source), a memory leak caught before the limit, and sensitive values that never come out."""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import orjson
import pytest

from stream.contracts.schemas import validate
from stream.kafka.follow import read_all
from stream.privacy.protect import FieldProtection, generate_key
from stream.sdk.client import make_event

from .conftest import isolated_settings
from .helpers import publish

TEXT_KEY = generate_key()
HASH_KEY = generate_key()
CARD = "4111 1111 1111 1111"
EMAILS = [f"customer{i}@example.org" for i in range(5)]


@pytest.fixture(scope="module")
def secured(broker):
    iso = isolated_settings(broker, zscore_warmup=100, window_s=10.0)
    env = {
        "STREAM_MONITOR_WINDOW_S": "10",
        "STREAM_MONITOR_TEXT_KEY": base64.urlsafe_b64encode(TEXT_KEY).decode(),
        "STREAM_MONITOR_HASH_KEY": base64.urlsafe_b64encode(HASH_KEY).decode(),
        "STREAM_MONITOR_SENSITIVE_FIELDS": "features.email",
    }
    worker = iso.worker(env_extra=env)
    worker.start()
    yield iso, worker
    worker.stop()


async def alerts_until(iso, model, predicate, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    found = []
    while time.monotonic() < deadline:
        records = await read_all(iso.settings.bootstrap_servers, iso.settings.topics.alerts, timeout_s=2)
        found = [(r.value, orjson.loads(r.value)) for r in records]
        found = [(raw, a) for raw, a in found if a["model"] == model]
        if predicate([a for _, a in found]):
            return found
    raise AssertionError(f"alerts of {model}: {[(a['detector'], a['signal']) for _, a in found]}")


async def test_a_bursting_client_is_named_and_a_normal_one_is_not(secured):
    iso, _ = secured
    t0 = (time.time() // 10) * 10 - 120  # whole 10-s windows, 20 requests each
    events = []
    for w in range(8):
        for client, n in (("checkout-api", 20), ("scraper-7", 20 if w < 7 else 400)):
            events += [
                make_event(
                    "ranker",
                    "1",
                    15.0,
                    0,
                    timestamp=t0 + w * 10 + i * 9.0 / n,
                    client_id=client,
                    confidence=0.9,
                    features={"q": float(i)},
                )
                for i in range(n)
            ]
    events.sort(key=lambda e: e["timestamp"])
    await publish(iso, events)
    found = await alerts_until(iso, "ranker", lambda a: any(x["detector"] == "client_abuse" for x in a))
    abuse = [a for _, a in found if a["detector"] == "client_abuse"]
    for alert in abuse:
        validate("alert", alert)
    assert [(a["kind"], a["evidence"]["client_id"], a["evidence"]["reason"]) for a in abuse] == [
        ("security", "scraper-7", "burst")
    ]
    # It fires as soon as the count crosses the limit, not at the end of the window.
    assert abuse[0]["threshold"] == 100 and abuse[0]["value"] == 101
    assert abuse[0]["baseline"]["requests_per_window"] == pytest.approx(20, abs=1)
    assert "scraper-7" in abuse[0]["message"]


async def test_a_card_number_in_an_encrypted_llm_output_gives_an_alert_without_the_number(secured):
    iso, _ = secured
    t0 = time.time() - 30
    protection = FieldProtection(encrypt_text=True, text_key=TEXT_KEY)
    events = [
        make_event(
            "support-llm",
            "3",
            800.0,
            "ok",
            timestamp=t0 + i * 0.1,
            input_text="where is my order?",
            output_text="It ships tomorrow." if i != 25 else f"Your card {CARD} was charged.",
        )
        for i in range(50)
    ]
    await publish(iso, events, protection=protection)
    found = await alerts_until(iso, "support-llm", lambda a: any(x["detector"] == "private_data" for x in a))
    [(raw, alert)] = [(raw, a) for raw, a in found if a["detector"] == "private_data"]
    validate("alert", alert)
    assert (alert["kind"], alert["severity"], alert["signal"]) == ("security", "critical", "output_text")
    assert alert["evidence"]["kinds"] == {"payment_card": 1}
    assert "[REDACTED:19]" in alert["evidence"]["excerpts"][0]["excerpt"]
    for needle in (CARD, CARD.replace(" ", ""), "1111 1111"):
        assert needle.encode() not in raw
    # Kafka never held the text in clear either.
    stored = await read_all(iso.settings.bootstrap_servers, iso.settings.topics.events, timeout_s=2)
    llm = [r.value for r in stored if r.key == b"support-llm"]
    assert llm and not any(CARD.encode() in v or b"ships tomorrow" in v for v in llm)


async def test_a_memory_leak_gives_a_resource_alert_before_the_limit(secured):
    iso, _ = secured
    t0 = time.time() - 280
    limit = 4096.0
    events = [
        make_event(
            "leaky",
            "1",
            20.0,
            0,
            timestamp=t0 + i * 0.5,
            resources={"memory_mb": 900.0 + i * 0.5 * 1.5, "memory_limit_mb": limit, "cpu_percent": 35.0},
        )
        for i in range(540)
    ]
    await publish(iso, events)
    found = await alerts_until(iso, "leaky", lambda a: any(x["kind"] == "resource" for x in a))
    resource = [a for _, a in found if a["kind"] == "resource"]
    assert [a["detector"] for a in resource] == ["memory_leak"]
    leak = resource[0]
    validate("alert", leak)
    assert leak["evidence"]["to_mb"] < 0.5 * limit and leak["evidence"]["minutes_to_limit"] <= 60
    assert leak["evidence"]["slope_mb_per_min"] == pytest.approx(90, rel=0.1)


async def test_values_of_sensitive_fields_never_come_out(secured):
    iso, worker = secured
    t0 = time.time() - 60

    def crm(ts, email, age):
        return make_event("crm-scorer", "1", 12.0, 1, timestamp=ts, features={"email": email, "age": age})

    events = [crm(t0 + i * 0.05, EMAILS[i % 5], 30 + i % 9) for i in range(1200)]
    # A new, unseen address late in the stream: data quality reports unseen categories.
    events += [crm(t0 + 60 + i * 0.05, "new@example.net", 31) for i in range(300)]
    await publish(iso, events)
    stats = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{worker.url}/models/crm-scorer/stats", timeout=5) as response:
                stats = response.read()
            if json.loads(stats)["versions"]["1"]["events"] == len(events):
                break
        except OSError:
            pass
        time.sleep(0.3)
    assert stats is not None and b"h:" in stats  # categories are counted by their hashes
    with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as response:
        metrics = response.read()
    alerts = await read_all(iso.settings.bootstrap_servers, iso.settings.topics.alerts, timeout_s=2)
    letters = await read_all(iso.settings.bootstrap_servers, iso.settings.topics.deadletter, timeout_s=2)
    log = worker.log_tail(10_000).encode()
    for email in [*EMAILS, "new@example.net"]:
        for where, blob in (("stats", stats), ("metrics", metrics), ("log", log)):
            assert email.encode() not in blob, f"{email} in {where}"
        assert not any(email.encode() in r.value for r in alerts)
        assert not any(email.encode() in orjson.loads(r.value)["reason"].encode() for r in letters)

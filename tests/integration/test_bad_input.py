"""Property test at the agents: whatever records arrive, the worker keeps running,
every bad one lands on the dead-letter topic with a reason, and every good event is counted.

Hypothesis draws mixes of random bytes, truncated and deeply nested JSON,
wrong types, NaN and infinity, huge records, unknown schema versions, far
future and ancient timestamps, out-of-order events and duplicated records,
for one worker on the real broker. The expected outcome of each record comes
from the decoder (whose own properties tests/unit/test_codec_fuzz.py checks);
what is tested here is that the agents honour it: nothing lost, nothing
doubled, no crash.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stream.contracts.codec import TimeBounds, decode_label, decode_record
from stream.contracts.schemas import validate
from stream.kafka.follow import read_all

from .conftest import isolated_settings
from .test_faults import counted


def event(model: str, offset_s: float, **changes) -> dict:
    ev = {
        "schema_version": 1,
        "event_id": f"e{time.monotonic_ns()}",
        "timestamp": time.time() - offset_s,
        "model": model,
        "model_version": "1",
        "latency_ms": 12.5,
        "prediction": 1,
        "features": {"x": 1.5, "colour": "red"},
    }
    ev.update(changes)
    return ev


NASTY_BYTES = [
    b"",
    b"null",
    b"[]",
    b'{"schema_version": 1, "events": []}',
    b'{"schema_version": 1, "latency_ms": NaN}',
    b'{"schema_version": 1, "latency_ms": Infinity}',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b"\xff\xfe\x00garbage",
    b'{"schema_version": 1, "junk": "' + b"x" * 900_000 + b'"}',  # its dead letter must still fit in Kafka
]


@st.composite
def records(draw, models: list[str]) -> tuple[bytes | None, bytes]:
    """One record (key, value) of some kind, good or bad."""
    model = draw(st.sampled_from(models))
    key = model.encode()
    kind = draw(
        st.sampled_from(
            [
                "good",
                "envelope",
                "random_bytes",
                "truncated",
                "nasty",
                "wrong_types",
                "unknown_version",
                "future",
                "ancient",
                "huge",
                "wrong_key",
            ]
        )
    )
    offset = draw(st.floats(0, 20))  # out of order within the allowed lateness
    if kind == "good":
        return key, orjson.dumps(event(model, offset))
    if kind == "envelope":
        n = draw(st.integers(1, 30))
        batch = [event(model, draw(st.floats(0, 20))) for _ in range(n)]
        if draw(st.booleans()):
            batch[draw(st.integers(0, n - 1))]["latency_ms"] = "slow"  # one bad event inside
        body = {"schema_version": 1, "events": batch}
        if draw(st.booleans()):
            body["batch_id"] = f"b{time.monotonic_ns()}"
        return key, orjson.dumps(body)
    if kind == "random_bytes":
        return draw(st.one_of(st.none(), st.binary(max_size=8))), draw(st.binary(max_size=300))
    if kind == "truncated":
        raw = orjson.dumps(event(model, offset))
        # A share, not an index: the length varies with the event id and the clock.
        return key, raw[: max(1, int(draw(st.floats(0, 0.99)) * len(raw)))]
    if kind == "nasty":
        return key, draw(st.sampled_from(NASTY_BYTES))
    if kind == "wrong_types":
        field = draw(st.sampled_from(["latency_ms", "timestamp", "model_version", "features", "event_id"]))
        value = draw(
            st.one_of(
                st.text(max_size=5), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3), st.none(), st.booleans()
            )
        )
        return key, orjson.dumps(event(model, offset, **{field: value}))
    if kind == "unknown_version":
        return key, orjson.dumps(event(model, offset, schema_version=draw(st.sampled_from([0, 2, 99, "1", None]))))
    if kind == "future":
        ahead = draw(st.sampled_from([3_600.0, 86_400.0 * 365, time.time() * 999]))
        return key, orjson.dumps(event(model, -ahead))
    if kind == "ancient":
        return key, orjson.dumps(event(model, 0, timestamp=draw(st.floats(0, 946_684_799))))
    if kind == "huge":
        # Near a megabyte in one feature value: accepted, but it must not bloat the state past what Kafka takes.
        return key, orjson.dumps(event(model, offset, features={"blob": "x" * draw(st.integers(100_000, 900_000))}))
    return b"someone-else", orjson.dumps(event(model, offset))


@pytest.fixture(scope="module")
def running(broker):
    iso = isolated_settings(broker)
    with iso.worker() as worker:
        yield iso, worker


EXAMPLE = itertools.count()


async def produce(bootstrap: str, topic: str, batch: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for key, value in batch:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


@settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_any_mix_of_records_loses_nothing_and_never_stops_the_worker(broker, running, data):
    iso, worker = running
    n = next(EXAMPLE)
    models = [f"fuzz{n}-{i}" for i in range(3)]
    batch = data.draw(st.lists(records(models), min_size=20, max_size=60))
    # A record sent twice (an at-least-once producer's retry) and an envelope resent under its batch id.
    batch += batch[:1]
    resend = orjson.dumps({"schema_version": 1, "batch_id": f"again{n}", "events": [event(models[0], 1)]})
    batch += [(models[0].encode(), resend), (models[0].encode(), resend)]

    bounds = TimeBounds(iso.settings.max_future_s, iso.settings.earliest_timestamp)
    expected = dict.fromkeys(models, 0)
    rejects = duplicates = 0
    applied_batches = set()
    for key, value in batch:
        decoded = decode_record(key, value, bounds)
        # Dead letters are at least once: a record's rejects go out whenever it is read as new, and
        # a resent envelope is a new record.
        rejects += len(decoded.rejects)
        if decoded.batch_id is not None and decoded.events:
            # An envelope applied once is skipped when it comes again under its batch id; one whose
            # every event was rejected was never applied, so nothing remembers its id.
            if decoded.batch_id in applied_batches:
                duplicates += 1
                continue
            applied_batches.add(decoded.batch_id)
        for ev in decoded.events:
            expected[ev["model"]] += 1

    before = worker.health()
    asyncio.run(produce(broker.bootstrap_servers, iso.settings.topics.events, batch))
    deadline = time.monotonic() + 60
    while (health := worker.health())["records"] < before["records"] + len(batch):
        assert worker.running, worker.log_tail()
        assert time.monotonic() < deadline, f"{health} after {len(batch)} records; log:\n{worker.log_tail()}"
        time.sleep(0.2)
    assert counted(worker, models) == expected
    assert health["dead_letters"] - before["dead_letters"] == rejects
    assert health["duplicate_batches"] - before["duplicate_batches"] == duplicates
    assert worker.running


def test_dead_letters_say_why_and_where_from(broker, running):
    iso, worker = running
    model = "reasons"
    bad = [
        (model.encode(), b"{not json"),
        (model.encode(), orjson.dumps(event(model, 0, schema_version=7))),
        (model.encode(), orjson.dumps(event(model, -86_400))),
        (b"other", orjson.dumps(event(model, 0))),
        (model.encode(), orjson.dumps(event(model, 0, latency_ms="slow"))),
        (model.encode(), NASTY_BYTES[-1]),
    ]
    asyncio.run(produce(broker.bootstrap_servers, iso.settings.topics.events, bad))
    letters = [
        json.loads(r.value)
        for r in asyncio.run(read_all(broker.bootstrap_servers, iso.settings.topics.deadletter, timeout_s=5))
    ]
    mine = [letter for letter in letters if letter["source"]["key_b64"] in ("cmVhc29ucw==", "b3RoZXI=")]
    for letter in mine:
        validate("dead-letter", letter)
        assert letter["source"]["topic"] == iso.settings.topics.events and letter["reason"]
    kinds = {letter["error_type"] for letter in mine}
    assert {"invalid_json", "unsupported_version", "invalid_timestamp", "key_mismatch", "invalid_schema"} <= kinds
    assert [letter["value_bytes"] for letter in mine if "value_bytes" in letter] == [len(NASTY_BYTES[-1])]
    assert worker.running


def test_bad_labels_are_dead_lettered_and_good_ones_joined(broker, running):
    iso, worker = running
    bounds = TimeBounds(iso.settings.max_future_s, iso.settings.earliest_timestamp)
    good = {"schema_version": 1, "request_id": "r1", "model": "labelled", "label": 1, "timestamp": time.time()}
    bad = [
        b"\x00\x01",
        orjson.dumps({**good, "timestamp": time.time() + 10**7}),
        orjson.dumps({**good, "label": {"nested": [1, 2]}, "request_id": None}),
        orjson.dumps({**good, "schema_version": 3}),
    ]
    expected_rejects = sum(decode_label(b"labelled", raw, bounds)[1] is not None for raw in bad)
    assert expected_rejects == len(bad)
    before = worker.health()
    batch = [(b"labelled", raw) for raw in bad] + [(b"labelled", orjson.dumps(good))]
    asyncio.run(produce(broker.bootstrap_servers, iso.settings.topics.labels, batch))
    deadline = time.monotonic() + 30
    while (health := worker.health())["labels"] < before["labels"] + 1:
        assert time.monotonic() < deadline, health
        time.sleep(0.2)
    assert health["dead_letters"] - before["dead_letters"] == expected_rejects
    assert worker.running

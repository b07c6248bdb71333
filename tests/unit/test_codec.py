"""Decoding records: single events, envelopes, and every way they go wrong."""

import time

import orjson
import pytest

from stream.contracts.codec import TimeBounds, decode_label, decode_record


def event(i=0, model="m", **changes):
    ev = {
        "schema_version": 1,
        "event_id": f"e{i}",
        "timestamp": 1000.0 + i,
        "model": model,
        "model_version": "1",
        "latency_ms": 10.0,
        "prediction": 1,
    }
    ev.update(changes)
    return ev


def test_single_event():
    out = decode_record(b"m", orjson.dumps(event()))
    assert [e["event_id"] for e in out.events] == ["e0"]
    assert out.rejects == []


def test_envelope_keeps_good_events_and_rejects_the_bad_one_alone():
    bad = event(1, latency_ms="slow")
    envelope = {"schema_version": 1, "events": [event(0), bad, event(2)]}
    out = decode_record(b"m", orjson.dumps(envelope))
    assert [e["event_id"] for e in out.events] == ["e0", "e2"]
    [reject] = out.rejects
    assert reject.event_index == 1
    assert reject.error_type == "invalid_schema"
    assert "latency_ms" in reject.reason
    assert orjson.loads(reject.value) == bad


@pytest.mark.parametrize(
    ("value", "error_type", "words"),
    [
        (b"{not json", "invalid_json", "not valid JSON"),
        (b"", "invalid_json", "not valid JSON"),
        (b"\xff\xfe", "invalid_json", "not valid JSON"),
        (b'{"latency_ms": NaN}', "invalid_json", "not valid JSON"),
        (b"[1, 2]", "invalid_schema", "expected a JSON object, got list"),
        (b'"text"', "invalid_schema", "got str"),
        (b'{"schema_version": 2, "events": []}', "unsupported_version", "schema_version 2"),
        (b'{"events": []}', "unsupported_version", "schema_version None"),
        (b'{"schema_version": 1, "events": []}', "invalid_schema", "events"),
    ],
)
def test_bad_records_are_rejected_with_the_original_bytes(value, error_type, words):
    out = decode_record(b"m", value)
    assert out.events == []
    [reject] = out.rejects
    assert reject.error_type == error_type
    assert words in reject.reason
    assert reject.value == value
    assert reject.event_index is None


def test_event_under_another_models_key_is_rejected():
    out = decode_record(b"other", orjson.dumps(event()))
    assert out.events == []
    assert out.rejects[0].error_type == "key_mismatch"
    assert "'other'" in out.rejects[0].reason


def test_record_without_key_is_rejected():
    out = decode_record(None, orjson.dumps(event()))
    assert out.rejects[0].error_type == "key_mismatch"


def test_none_value_is_rejected_not_crashing():
    out = decode_record(b"m", None)
    assert out.rejects[0].error_type == "invalid_json"


BOUNDS = TimeBounds(max_future_s=300.0, earliest=946_684_800.0)


def test_events_stamped_far_ahead_or_before_2000_are_rejected_alone_with_the_reason():
    now = time.time()
    good = event(0, timestamp=now)
    ahead = event(1, timestamp=now + 3600)
    millis = event(2, timestamp=now * 1000)
    ancient = event(3, timestamp=12.0)
    out = decode_record(b"m", orjson.dumps({"schema_version": 1, "events": [good, ahead, millis, ancient]}), BOUNDS)
    assert [e["event_id"] for e in out.events] == ["e0"]
    assert [(r.event_index, r.error_type) for r in out.rejects] == [
        (1, "invalid_timestamp"),
        (2, "invalid_timestamp"),
        (3, "invalid_timestamp"),
    ]
    assert "ahead of the worker's clock" in out.rejects[0].reason
    assert "milliseconds instead of seconds" in out.rejects[1].reason
    assert "before 946684800" in out.rejects[2].reason
    # A little clock skew is fine; without bounds nothing is checked.
    assert decode_record(b"m", orjson.dumps(event(4, timestamp=now + 200)), BOUNDS).events
    assert decode_record(b"m", orjson.dumps(ancient)).events


def test_labels_with_implausible_timestamps_are_rejected():
    label = {"schema_version": 1, "request_id": "r", "model": "m", "label": 1, "timestamp": time.time() + 10**6}
    accepted, reject = decode_label(b"m", orjson.dumps(label), BOUNDS)
    assert accepted is None and reject.error_type == "invalid_timestamp"
    label["timestamp"] = time.time()
    assert decode_label(b"m", orjson.dumps(label), BOUNDS)[0] == label

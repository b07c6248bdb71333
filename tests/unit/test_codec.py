"""Decoding records: single events, envelopes, and every way they go wrong."""

import orjson
import pytest

from stream.codec import decode_record


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

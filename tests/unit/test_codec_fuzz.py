"""Property tests: whatever bytes arrive, decoding never raises, and every input is
either accepted as valid events or rejected with a reason and its original bytes."""

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.contracts.codec import TimeBounds, decode_label, decode_record
from stream.contracts.schemas import SchemaError, validate

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)

EVENT_FIELDS = {
    "schema_version": st.sampled_from([1, 1, 1, 2, "1", None]),
    "event_id": st.text(max_size=5),
    "timestamp": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3)),
    "model": st.sampled_from(["m", "other", "", "bad model"]),
    "model_version": st.text(max_size=3),
    "latency_ms": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.none(), st.text(max_size=2)),
    "prediction": json_values,
    "features": st.one_of(st.dictionaries(st.text(max_size=5), json_values, max_size=4), json_values),
}
events = st.fixed_dictionaries({}, optional=EVENT_FIELDS)


def check(decoded, raw):
    for event in decoded.events:
        validate("inference-event", event)  # accepted events really are valid
    for reject in decoded.rejects:
        assert reject.reason and reject.error_type
        if reject.event_index is None:
            assert reject.value == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.one_of(st.none(), st.binary(max_size=10)))
def test_random_bytes_never_raise(raw, key):
    decoded = decode_record(key, raw)
    check(decoded, raw)
    assert decoded.events or decoded.rejects


@settings(max_examples=300, deadline=None)
@given(events)
def test_random_events_are_accepted_only_when_valid(event):
    raw = orjson.dumps(event)
    decoded = decode_record(b"m", raw)
    check(decoded, raw)
    try:
        validate("inference-event", event)
        valid = event.get("model") == "m"
    except SchemaError:
        valid = False
    assert (decoded.events == [event]) is valid
    assert len(decoded.events) + len(decoded.rejects) == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(events, min_size=1, max_size=8))
def test_envelopes_lose_no_event(batch):
    raw = orjson.dumps({"schema_version": 1, "events": batch})
    decoded = decode_record(b"m", raw)
    check(decoded, raw)
    # Every event is either accepted or rejected with its index: nothing vanishes.
    assert len(decoded.events) + len(decoded.rejects) == len(batch)
    assert sorted(r.event_index for r in decoded.rejects) == sorted(set(r.event_index for r in decoded.rejects))


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_deeply_odd_json_is_rejected_cleanly(value):
    raw = orjson.dumps(value)
    decoded = decode_record(b"m", raw)
    check(decoded, raw)
    label, reject = decode_label(b"m", raw)
    assert (label is None) != (reject is None)


def test_deep_nesting_and_huge_numbers():
    deep = b"[" * 2000 + b"]" * 2000
    assert decode_record(b"m", deep).rejects[0].error_type == "invalid_json"
    huge = b'{"schema_version": 1, "latency_ms": 1e999}'
    assert decode_record(b"m", huge).rejects[0].error_type == "invalid_json"


def test_integers_beyond_64_bits_become_floats_not_crashes():
    raw = (
        b'{"schema_version": 1, "event_id": "e", "timestamp": 1, "model": "m", "model_version": "1",'
        b' "prediction": 0, "latency_ms": 123456789012345678901234567890}'
    )
    [event] = decode_record(b"m", raw).events
    assert event["latency_ms"] == 1.2345678901234568e29


NOW = 1_795_392_000.0
BOUNDS = TimeBounds(max_future_s=300.0, earliest=946_684_800.0)
# Mostly valid events, so that whole envelopes pass; now and then one broken field,
# another model or a time just outside the bounds.
BREAKS = st.sampled_from(
    [
        {},
        {},
        {},
        {"model": "other"},
        {"model": "bad model"},
        {"timestamp": NOW + 301},
        {"timestamp": NOW + 299},
        {"timestamp": 946_684_799.5},
        {"timestamp": 946_684_800},
        {"latency_ms": -1},
        {"prediction": None},
        {"features": {"a": [1]}},
        {"schema_version": True},
        {"event_id": ""},
    ]
)


@st.composite
def mostly_valid_events(draw):
    event = {
        "schema_version": 1,
        "event_id": draw(st.text(min_size=1, max_size=5)),
        "timestamp": draw(st.floats(NOW - 86_400, NOW + 250)),
        "model": "m",
        "model_version": "1",
        "latency_ms": draw(st.floats(0, 1e6)),
        "prediction": draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3))),
        "features": draw(st.dictionaries(st.text(max_size=5), st.floats(allow_nan=False, allow_infinity=False))),
    }
    return event | draw(BREAKS)


@settings(max_examples=300, deadline=None)
@given(st.lists(mostly_valid_events(), min_size=1, max_size=6), st.booleans())
def test_an_envelope_accepts_and_rejects_each_event_as_a_record_of_its_own_would(batch, bounded):
    bounds = BOUNDS if bounded else None
    envelope = decode_record(b"m", orjson.dumps({"schema_version": 1, "events": batch}), bounds, now=NOW)
    alone = [decode_record(b"m", orjson.dumps(event), bounds, now=NOW) for event in batch]
    assert envelope.events == [event for one in alone for event in one.events]
    assert [(r.event_index, r.error_type, r.reason) for r in envelope.rejects] == [
        (index, r.error_type, r.reason) for index, one in enumerate(alone) for r in one.rejects
    ]

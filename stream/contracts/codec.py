"""Decoding inference-events records: one event or an envelope of many.

A record either yields valid events or rejects with a reason; nothing is
lost in between. A bad event inside an otherwise good envelope is rejected
alone (with its index), so one broken event does not cost its neighbours.

>>> import orjson
>>> ev = {"schema_version": 1, "event_id": "e1", "timestamp": 1.0,
...       "model": "m", "model_version": "1", "latency_ms": 5, "prediction": 1}
>>> out = decode_record(b"m", orjson.dumps(ev))
>>> len(out.events), out.rejects
(1, [])
>>> bad = decode_record(b"m", b"{not json")
>>> bad.rejects[0].error_type
'invalid_json'
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson

from stream.contracts import SCHEMA_VERSION
from stream.contracts.schemas import SchemaError, all_valid, validate


@dataclass(slots=True)
class Reject:
    """One input that cannot be processed: what it was and why."""

    reason: str
    error_type: str
    value: bytes
    event_index: int | None = None


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """Plausible event times: not before ``earliest``, not more than ``max_future_s`` ahead of ``now``.

    >>> bounds = TimeBounds(max_future_s=300.0, earliest=946_684_800.0)
    >>> bounds.problem(1_795_392_000.0, now=1_795_392_100.0) is None
    True
    >>> "ahead of the worker's clock (limit 300 s); milliseconds instead of seconds?" in bounds.problem(
    ...     1_795_392_000_000.0, now=1_795_392_100.0)
    True
    """

    max_future_s: float
    earliest: float

    def problem(self, timestamp: float, now: float) -> str | None:
        """Why ``timestamp`` is implausible at ``now``, or None."""
        if timestamp > now + self.max_future_s:
            hint = "; milliseconds instead of seconds?" if timestamp > now * 100 else ""
            return (
                f"timestamp {timestamp!r} is {timestamp - now:.0f} s ahead of the worker's clock "
                f"(limit {self.max_future_s:g} s){hint}"
            )
        if timestamp < self.earliest:
            return f"timestamp {timestamp!r} is before {self.earliest:.0f} (Unix epoch seconds expected)"
        return None


@dataclass(slots=True)
class DecodedRecord:
    """The valid events of one record and the rejected parts of it."""

    events: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    # The envelope's batch id, which a retried envelope keeps (None for single events).
    batch_id: str | None = None


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, Reject | None]:
    """A JSON object of this contract version, or why the bytes are not one."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, Reject(f"not valid JSON: {exc}", "invalid_json", raw)
    if not isinstance(message, dict):
        return None, Reject(f"expected a JSON object, got {type(message).__name__}", "invalid_schema", raw)
    version = message.get("schema_version")
    if version != SCHEMA_VERSION:
        reason = f"unsupported schema_version {version!r}; this worker reads {SCHEMA_VERSION}"
        return None, Reject(reason, "unsupported_version", raw)
    return message, None


def _key_text(key: bytes | None) -> str | None:
    return key.decode("utf-8", "replace") if key is not None else None


def decode_record(
    key: bytes | None, value: bytes | None, bounds: TimeBounds | None = None, now: float | None = None
) -> DecodedRecord:
    """Decode and validate one inference-events record.

    The record key must be the model name: it decides the partition, and so
    the worker that keeps the model's state. Events naming another model
    are rejected with ``key_mismatch`` instead of silently splitting state.
    With ``bounds``, events outside them are rejected as ``invalid_timestamp``
    (``now``: the worker's clock, ``time.time()`` unless given).
    """
    now = time.time() if now is None else now
    out = DecodedRecord()
    raw = value or b""
    message, reject = _parse(raw)
    if reject is not None:
        out.rejects.append(reject)
        return out
    assert message is not None

    model_key = _key_text(key)
    if "events" in message:
        try:
            validate("inference-envelope", message)
        except SchemaError as exc:
            out.rejects.append(Reject(str(exc), "invalid_schema", raw))
            return out
        out.batch_id = message.get("batch_id")
        events = message["events"]
        if _all_acceptable(events, model_key, bounds, now):
            out.events = events
            return out
        for index, event in enumerate(events):
            _accept(out, event, model_key, index, bounds, now)
    else:
        _accept(out, message, model_key, None, bounds, now, raw)
    return out


_model_of = itemgetter("model")
_timestamp_of = itemgetter("timestamp")


def _all_acceptable(events: list[Any], model_key: str | None, bounds: TimeBounds | None, now: float) -> bool:
    """Whether every event of an envelope is valid, of the key's model and within bounds: checked in one go.

    Event by event (:func:`_accept`) costs a call to the validator per event;
    this is the usual case, and when it fails the events go one by one to find which.
    """
    if not all_valid("inference-event")(events) or set(map(_model_of, events)) != {model_key}:
        return False
    if bounds is None:
        return True
    times = list(map(_timestamp_of, events))
    return bounds.problem(min(times), now) is None and bounds.problem(max(times), now) is None


def _accept(
    out: DecodedRecord,
    event: dict[str, Any],
    model_key: str | None,
    index: int | None,
    bounds: TimeBounds | None,
    now: float,
    raw: bytes = b"",
) -> None:
    """Keep a valid event; reject an invalid one alone (an envelope's event re-encoded)."""
    try:
        validate("inference-event", event)
        reason, error_type = None, ""
    except SchemaError as exc:
        reason, error_type = str(exc), "invalid_schema"
    if reason is None and event["model"] != model_key:
        reason = (
            f"record key {model_key!r} is not the event's model {event['model']!r}; "
            "publish with the model name as the key (stream.sdk.client does)"
        )
        error_type = "key_mismatch"
    if reason is None and bounds is not None:
        reason, error_type = bounds.problem(event["timestamp"], now), "invalid_timestamp"
    if reason is None:
        out.events.append(event)
        return
    # Only a rejected event of an envelope is encoded again: valid ones never are.
    out.rejects.append(Reject(reason, error_type, raw if index is None else orjson.dumps(event), index))


def decode_label(
    key: bytes | None, value: bytes | None, bounds: TimeBounds | None = None
) -> tuple[dict[str, Any] | None, Reject | None]:
    """Decode and validate one inference-labels record: the label, or why not.

    >>> label, reject = decode_label(b"m", b'{"schema_version": 1, "request_id": "r", '
    ...     b'"model": "m", "label": 1, "timestamp": 5}')
    >>> label["label"], reject
    (1, None)
    >>> decode_label(b"m", b"[]")[1].error_type
    'invalid_schema'
    """
    raw = value or b""
    message, reject = _parse(raw)
    if reject is not None:
        return None, reject
    assert message is not None
    try:
        validate("label-event", message)
    except SchemaError as exc:
        return None, Reject(str(exc), "invalid_schema", raw)
    model_key = _key_text(key)
    if message["model"] != model_key:
        reason = f"record key {model_key!r} is not the label's model {message['model']!r}; key labels by model"
        return None, Reject(reason, "key_mismatch", raw)
    problem = None if bounds is None else bounds.problem(message["timestamp"], time.time())
    if problem is not None:
        return None, Reject(problem, "invalid_timestamp", raw)
    return message, None

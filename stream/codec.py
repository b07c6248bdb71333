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

from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.schemas import SCHEMA_VERSION, SchemaError, validate


@dataclass(slots=True)
class Reject:
    """One input that cannot be processed: what it was and why."""

    reason: str
    error_type: str
    value: bytes
    event_index: int | None = None


@dataclass(slots=True)
class DecodedRecord:
    """The valid events of one record and the rejected parts of it."""

    events: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def decode_record(key: bytes | None, value: bytes | None) -> DecodedRecord:
    """Decode and validate one inference-events record.

    The record key must be the model name: it decides the partition, and so
    the worker that keeps the model's state. Events naming another model
    are rejected with ``key_mismatch`` instead of silently splitting state.
    """
    out = DecodedRecord()
    raw = value or b""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        out.rejects.append(Reject(f"not valid JSON: {exc}", "invalid_json", raw))
        return out
    if not isinstance(message, dict):
        kind = type(message).__name__
        out.rejects.append(Reject(f"expected a JSON object, got {kind}", "invalid_schema", raw))
        return out
    version = message.get("schema_version")
    if version != SCHEMA_VERSION:
        out.rejects.append(
            Reject(
                f"unsupported schema_version {version!r}; this worker reads {SCHEMA_VERSION}",
                "unsupported_version",
                raw,
            )
        )
        return out

    model_key = key.decode("utf-8", "replace") if key is not None else None
    if "events" in message:
        try:
            validate("inference-envelope", message)
        except SchemaError as exc:
            out.rejects.append(Reject(str(exc), "invalid_schema", raw))
            return out
        for index, event in enumerate(message["events"]):
            _accept(out, event, model_key, orjson.dumps(event), index)
    else:
        _accept(out, message, model_key, raw, None)
    return out


def _accept(
    out: DecodedRecord,
    event: dict[str, Any],
    model_key: str | None,
    raw: bytes,
    index: int | None,
) -> None:
    try:
        validate("inference-event", event)
    except SchemaError as exc:
        out.rejects.append(Reject(str(exc), "invalid_schema", raw, index))
        return
    if event["model"] != model_key:
        reason = (
            f"record key {model_key!r} is not the event's model {event['model']!r}; "
            "publish with the model name as the key (stream.client does)"
        )
        out.rejects.append(Reject(reason, "key_mismatch", raw, index))
        return
    out.events.append(event)


def decode_label(key: bytes | None, value: bytes | None) -> tuple[dict[str, Any] | None, Reject | None]:
    """Decode and validate one inference-labels record: the label, or why not.

    >>> label, reject = decode_label(b"m", b'{"schema_version": 1, "request_id": "r", '
    ...     b'"model": "m", "label": 1, "timestamp": 5}')
    >>> label["label"], reject
    (1, None)
    >>> decode_label(b"m", b"[]")[1].error_type
    'invalid_schema'
    """
    raw = value or b""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, Reject(f"not valid JSON: {exc}", "invalid_json", raw)
    if not isinstance(message, dict):
        return None, Reject(f"expected a JSON object, got {type(message).__name__}", "invalid_schema", raw)
    if message.get("schema_version") != SCHEMA_VERSION:
        version = message.get("schema_version")
        reason = f"unsupported schema_version {version!r}; this worker reads {SCHEMA_VERSION}"
        return None, Reject(reason, "unsupported_version", raw)
    try:
        validate("label-event", message)
    except SchemaError as exc:
        return None, Reject(str(exc), "invalid_schema", raw)
    model_key = key.decode("utf-8", "replace") if key is not None else None
    if message["model"] != model_key:
        reason = f"record key {model_key!r} is not the label's model {message['model']!r}; key labels by model"
        return None, Reject(reason, "key_mismatch", raw)
    return message, None

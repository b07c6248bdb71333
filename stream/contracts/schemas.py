"""The message contracts: JSON Schemas from ``schemas/``, compiled once.

The files in the repository's ``schemas/`` folder are the single source of
truth; a wheel carries a copy as ``stream/_schemas``. Validators are compiled
once, when first used: jsonschema-rs (Rust) checks every message in about a
microsecond, and only a message it refuses goes through fastjsonschema as
well, whose errors name the field in plain words.

>>> validate("label-event", {"schema_version": 1, "request_id": "r1",
...     "model": "m", "label": 1, "timestamp": 1.0})
>>> try:
...     validate("label-event", {"schema_version": 1})
... except SchemaError as exc:
...     print(exc)
label-event: data must contain ['label', 'model', 'request_id', 'timestamp'] properties
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema_rs
import orjson

SCHEMA_NAMES = ("inference-event", "inference-envelope", "label-event", "alert", "dead-letter", "retrain-request")


class SchemaError(ValueError):
    """A message broke its contract; the text names the schema and the field."""


def schema_dir() -> Path:
    """The folder holding the ``*.schema.json`` files (source tree or wheel)."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "schemas", package / "_schemas"):
        if (candidate / "alert.schema.json").is_file():
            return candidate
    raise FileNotFoundError(f"no schemas/ folder next to {package}")


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed JSON Schema called ``name`` (for example ``"alert"``)."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return orjson.loads((schema_dir() / f"{name}.schema.json").read_bytes())


@functools.cache
def validator(name: str) -> Callable[[Any], Any]:
    """A compiled validator for schema ``name`` that raises fastjsonschema errors."""
    return fastjsonschema.compile(load_schema(name))


@functools.cache
def is_valid(name: str) -> Callable[[Any], bool]:
    """A compiled check for schema ``name`` that answers True or False, fast."""
    return jsonschema_rs.validator_for(load_schema(name)).is_valid


@functools.cache
def all_valid(name: str) -> Callable[[list[Any]], bool]:
    """A compiled check that every message of a list meets schema ``name``, in one call.

    An envelope's events are checked together this way; only when any fails
    are they checked one by one, to find which.

    >>> all_valid("label-event")([{"schema_version": 1, "request_id": "r1", "model": "m", "label": 1,
    ...     "timestamp": 1.0}]), all_valid("label-event")([{"schema_version": 1}])
    (True, False)
    """
    schema = load_schema(name)
    items = {k: v for k, v in schema.items() if k not in ("$schema", "$id")}
    # The schema's own draft, as the one-message check uses.
    return jsonschema_rs.validator_for({"$schema": schema["$schema"], "type": "array", "items": items}).is_valid


def validate(name: str, message: Any) -> None:
    """Check ``message`` against schema ``name``; raise :class:`SchemaError` if it fails."""
    if is_valid(name)(message):
        return
    try:
        validator(name)(message)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise SchemaError(f"{name}: {exc.message}") from None

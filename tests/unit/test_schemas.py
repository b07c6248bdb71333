"""The contracts in schemas/: valid JSON Schema, valid examples, helpful errors."""

import copy

import jsonschema
import pytest

from stream.contracts.schemas import SCHEMA_NAMES, SchemaError, load_schema, validate


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_valid_draft7_and_has_examples(name):
    schema = load_schema(name)
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["examples"], f"{name} has no examples"


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_examples_pass_both_validators(name):
    schema = load_schema(name)
    for example in schema["examples"]:
        jsonschema.validate(example, schema, cls=jsonschema.Draft7Validator)
        validate(name, example)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_message_requires_schema_version(name):
    example = copy.deepcopy(load_schema(name)["examples"][0])
    del example["schema_version"]
    with pytest.raises(SchemaError, match="schema_version"):
        validate(name, example)


def _event(**changes):
    event = copy.deepcopy(load_schema("inference-event")["examples"][0])
    event.update(changes)
    return event


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"latency_ms": "fast"}, "latency_ms"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"confidence": 1.5}, "confidence"),
        ({"features": {"amount": [1, 2]}}, "features.amount"),
        ({"model": ""}, "model"),
        ({"timestamp": "2026-01-01"}, "timestamp"),
        ({"tokens_in": 1.5}, "tokens_in"),
        ({"latencyms": 3}, "latencyms"),
    ],
)
def test_invalid_event_error_names_the_field(changes, field):
    with pytest.raises(SchemaError) as info:
        validate("inference-event", _event(**changes))
    assert field in str(info.value)


def test_alert_requires_event_time():
    alert = copy.deepcopy(load_schema("alert")["examples"][0])
    del alert["event_time"]
    with pytest.raises(SchemaError, match="event_time"):
        validate("alert", alert)

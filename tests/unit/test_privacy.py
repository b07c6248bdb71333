"""Privacy at the source and in the worker: keyed hashing, AES-GCM round trip, sensitive fields."""

from __future__ import annotations

import base64
import logging

import pytest

from stream.privacy.protect import (
    EventPrivacy,
    FieldProtection,
    TextReader,
    decrypt_text,
    encrypt_text,
    generate_key,
    keyed_hash,
)
from stream.settings import ConfigError, Settings


def test_keyed_hash_is_stable_per_key_and_hides_the_value():
    key = generate_key()
    assert keyed_hash("acme", key) == keyed_hash("acme", key)
    assert keyed_hash("acme", key) != keyed_hash("acme", generate_key())
    assert "acme" not in keyed_hash("acme", key) and len(keyed_hash("acme", key)) == 34


def test_encryption_round_trip_and_what_breaks_it():
    key = generate_key()
    sealed = encrypt_text("card 4111 1111 1111 1111", key, "llm")
    assert "4111" not in sealed and sealed != encrypt_text("card 4111 1111 1111 1111", key, "llm")  # fresh nonce
    assert decrypt_text(sealed, key, "llm") == "card 4111 1111 1111 1111"
    with pytest.raises(ValueError):
        decrypt_text(sealed, generate_key(), "llm")
    with pytest.raises(ValueError):
        decrypt_text(sealed, key, "another-model")  # the model is bound as associated data


def test_sdk_protection_drops_hashes_redacts_and_encrypts():
    text_key, hash_key = generate_key(), generate_key()
    protection = FieldProtection(
        drop=["features.ssn"],
        hash_fields=["client_id", "features.user"],
        redact=["input_text"],
        encrypt_text=True,
        hash_key=hash_key,
        text_key=text_key,
    )
    event = {
        "model": "llm",
        "client_id": "acme",
        "features": {"ssn": "078-05-1120", "user": "jane", "n": 3},
        "input_text": "mail me at jane@example.com",
        "output_text": "sure",
    }
    out = protection.apply(event)
    assert event["features"]["ssn"] == "078-05-1120"  # the caller's event is untouched
    assert "ssn" not in out["features"] and out["features"]["n"] == 3
    assert out["client_id"] == keyed_hash("acme", hash_key)
    assert "jane@example.com" not in decrypt_text(out["input_text"], text_key, "llm")
    assert decrypt_text(out["output_text"], text_key, "llm") == "sure"


def test_protection_needs_its_keys():
    with pytest.raises(ConfigError, match=r"^hash_key"):
        FieldProtection(hash_fields=["client_id"])
    with pytest.raises(ConfigError, match=r"^text_key"):
        FieldProtection(encrypt_text=True, text_key=b"short")


def test_worker_without_the_key_skips_encrypted_text_and_says_so_once(caplog):
    sealed = encrypt_text("secret", generate_key(), "m")
    reader = TextReader(None)
    with caplog.at_level(logging.WARNING):
        out = reader.readable([{"output_text": sealed, "x": i} for i in range(3)], "m")
    assert all("output_text" not in e for e in out) and [e["x"] for e in out] == [0, 1, 2]
    assert reader.skipped == 3
    assert len([r for r in caplog.records if "STREAM_MONITOR_TEXT_KEY" in r.getMessage()]) == 1


def test_worker_hashes_sensitive_fields_consistently_with_the_sdk():
    hash_key = generate_key()
    settings = Settings(sensitive_fields="client_id", hash_key=base64.urlsafe_b64encode(hash_key).decode())
    privacy = EventPrivacy(settings.validate())
    from_sdk = FieldProtection(hash_fields=["client_id"], hash_key=hash_key).apply({"model": "m", "client_id": "acme"})
    raw = {"model": "m", "client_id": "acme"}
    assert privacy.prepare([raw], "m")[0]["client_id"] == privacy.prepare([from_sdk], "m")[0]["client_id"]


def test_keygen_prints_a_key_the_settings_accept():
    from click.testing import CliRunner

    from stream.tools.cli import cli

    key = CliRunner().invoke(cli, ["keygen"]).output.strip()
    settings = Settings.from_env({"STREAM_MONITOR_TEXT_KEY": key, "STREAM_MONITOR_HASH_KEY": key})
    assert settings.text_key == key

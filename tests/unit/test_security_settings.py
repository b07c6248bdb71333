"""TLS and SASL settings reach aiokafka and Faust as they should; mistakes name the setting."""

from __future__ import annotations

import ssl

import faust
import pytest

from stream.settings import ConfigError, Settings


def test_sasl_scram_over_tls_for_aiokafka_and_faust(tmp_path):
    env = {
        "STREAM_MONITOR_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAM_MONITOR_SASL_MECHANISM": "SCRAM-SHA-512",
        "STREAM_MONITOR_SASL_USERNAME": "monitor",
        "STREAM_MONITOR_SASL_PASSWORD": "s3cret",
    }
    settings = Settings.from_env(env)
    options = settings.kafka_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("monitor", "s3cret")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    credentials = settings.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "monitor" and str(credentials.mechanism.value) == "SCRAM-SHA-512"
    assert "s3cret" not in repr(settings)


def test_plain_sasl_without_tls_and_tls_alone():
    plain = Settings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p").validate()
    assert "ssl_context" not in plain.kafka_options()
    assert plain.kafka_options()["sasl_mechanism"] == "PLAIN"
    tls = Settings(security_protocol="SSL").validate()
    assert isinstance(tls.faust_credentials(), faust.SSLCredentials)
    assert set(tls.kafka_options()) == {"security_protocol", "ssl_context"}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STREAM_MONITOR_SECURITY_PROTOCOL": "TLS"}, "security_protocol"),
        ({"STREAM_MONITOR_SECURITY_PROTOCOL": "SASL_SSL"}, "sasl_username"),
        ({"STREAM_MONITOR_SASL_MECHANISM": "GSSAPI"}, "sasl_mechanism"),
        ({"STREAM_MONITOR_SSL_CAFILE": "/no/such/ca.pem"}, "ssl_cafile"),
        ({"STREAM_MONITOR_TEXT_KEY": "too-short"}, "text_key"),
        ({"STREAM_MONITOR_SENSITIVE_FIELDS": "client_id"}, "hash_key"),
    ],
)
def test_mistakes_name_the_setting(env, named):
    with pytest.raises(ConfigError, match=f"^{named}"):
        Settings.from_env(env)

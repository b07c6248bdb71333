"""Worker settings: connection and topic names from the environment or flags.

Every setting has a default that works on the embedded broker. A wrong value
stops the program with a :class:`ConfigError` that names the setting.
"""

from __future__ import annotations

import math
import os
import re
import socket
import tempfile
from dataclasses import dataclass, field, fields, replace
from typing import Any

ENV_PREFIX = "STREAM_MONITOR_"
_HOSTPORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class ConfigError(ValueError):
    """A setting is wrong; the message names it and says what is expected."""


def parse_broker_url(url: str) -> str:
    """Turn ``kafka://HOST:PORT[,HOST:PORT]`` into aiokafka's bootstrap string.

    >>> parse_broker_url("kafka://127.0.0.1:9092")
    '127.0.0.1:9092'
    >>> parse_broker_url("localhost:9092;kafka://b2:9093")
    'localhost:9092,b2:9093'
    >>> parse_broker_url("http://x")
    Traceback (most recent call last):
    ...
    stream.config.ConfigError: broker: 'http://x' is not of the form kafka://HOST:PORT
    """
    hosts = []
    for part in re.split(r"[;,]", url.strip()):
        part = part.strip()
        if part.startswith("kafka://"):
            part = part[len("kafka://") :]
        part = part.rstrip("/")
        if not _HOSTPORT.match(part) or not 0 < int(part.rsplit(":", 1)[1]) < 65536:
            raise ConfigError(f"broker: {url!r} is not of the form kafka://HOST:PORT")
        hosts.append(part)
    if not hosts:
        raise ConfigError("broker: empty broker URL; expected kafka://HOST:PORT")
    return ",".join(hosts)


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names; the defaults are the contract's (README, Contracts)."""

    events: str = "inference-events"
    labels: str = "inference-labels"
    alerts: str = "monitor-alerts"
    deadletter: str = "monitor-deadletter"
    retrain: str = "model-retrain-requests"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker, the SDK and the CLI need to agree on."""

    broker: str = "kafka://127.0.0.1:9092"
    app_id: str = "stream-monitor"
    topics: Topics = field(default_factory=Topics)
    partitions: int = 4
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # When set, /models, /models/*/stats and /metrics require "Authorization: Bearer <token>".
    web_token: str = field(default="", repr=False)
    window_s: float = 60.0
    hopping_s: float = 600.0
    hop_s: float = 60.0
    lateness_s: float = 30.0
    # Event timestamps beyond the worker's clock by more than this, or before
    # earliest_timestamp (2000-01-01), are dead-lettered: one event stamped in
    # the far future would close every window of its model.
    max_future_s: float = 300.0
    earliest_timestamp: float = 946_684_800.0
    reference_events: int = 1000
    # A learnt reference also spans at least this much event time, so that it holds
    # the signal's ordinary variation from minute to minute, not one snapshot of it.
    reference_min_s: float = 300.0
    profile_dir: str = ""
    # TOML file of detectors per model and signal (see stream.monitoring.monitor_file); empty: built-in defaults.
    monitors_file: str = ""
    max_features: int = 200
    max_categories: int = 100
    zscore_threshold: float = 4.0
    zscore_warmup: int = 200
    zscore_min_outliers: int = 5
    alert_cooldown_s: float = 300.0
    # 0: two tumbling windows without a finding resolve an alert.
    resolve_after_s: float = 0.0
    # Keep predictions for the label join: "auto" once a model got a label,
    # "always", or "never".
    join_predictions: str = "auto"
    label_ttl_s: float = 6 * 3600.0
    performance_window: int = 500
    performance_margin: float = 0.05
    # Drift or a performance drop firing this long asks for retraining.
    retrain_after_s: float = 900.0
    drift_alpha: float = 0.001
    drift_min_psi: float = 0.1
    # Per-model series on /metrics for at most this many models per worker;
    # beyond it, one warning and a count, so Prometheus is not flooded.
    metrics_max_models: int = 200
    # A model's state goes to its changelog at most once per interval (and
    # its input records are committed only then), not once per record; a
    # crash replays at most this much, and the offsets saved in the state
    # keep the replay from counting twice.
    checkpoint_interval_s: float = 1.0
    # ... or sooner, once this many input records wait for a checkpoint.
    checkpoint_max_records: int = 20_000
    # The ingest agent takes up to this many records at a time, waiting at
    # most ingest_wait_s for them, and applies each model's share in one go.
    ingest_batch_records: int = 500
    ingest_wait_s: float = 0.02
    # Models whose live state stays in memory; the others are rebuilt from
    # the table (compressed bytes) when their next record comes.
    state_cache_models: int = 200
    connect_timeout_s: float = 120.0
    group_timeout_s: float = 10.0
    shutdown_grace_s: float = 10.0
    # Send every changelog record in its own record batch. Needed on Tansu,
    # which reports a partition's end offset as the base offset of its last
    # batch plus one, so table recovery would miss the rest of that batch.
    # Workers turn it on by themselves when they detect Tansu.
    single_record_batches: bool = False
    # Kafka security, for every connection of workers, the SDK and the CLI:
    # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; SASL mechanism PLAIN,
    # SCRAM-SHA-256 or SCRAM-SHA-512; CA, client certificate and key files.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    # AES-GCM key (URL-safe base64, 32 bytes) to read LLM text the SDK encrypted.
    text_key: str = field(default="", repr=False)
    # HMAC key (URL-safe base64, 32 bytes) for the fields marked sensitive below.
    hash_key: str = field(default="", repr=False)
    # Comma-separated fields (client_id, features.NAME, ...) whose raw values must
    # never reach an alert, a log line, a metric or a dead-letter reason: the
    # worker replaces them with keyed hashes as it decodes each event.
    sensitive_fields: str = ""
    # Faust's working folder; tables live in memory and in changelogs, so by
    # default it goes to the temp folder rather than the current directory.
    data_dir: str = ""

    @property
    def advertised_url(self) -> str:
        """How other workers reach this one's web server (for routed queries)."""
        host = self.web_host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"http://{host}:{self.web_port}"

    @property
    def data_path(self) -> str:
        """Faust's data folder for this app id."""
        return self.data_dir or os.path.join(tempfile.gettempdir(), "stream-monitor", self.app_id)

    @property
    def sensitive(self) -> tuple[str, ...]:
        """The fields marked sensitive, as a tuple."""
        return tuple(f.strip() for f in self.sensitive_fields.split(",") if f.strip())

    def kafka_options(self) -> dict[str, Any]:
        """Security options for aiokafka clients (producer, consumer, admin), from these settings.

        >>> Settings().kafka_options()
        {'security_protocol': 'PLAINTEXT'}
        """
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if "SSL" in self.security_protocol:
            options["ssl_context"] = self.ssl_context()
        if self.security_protocol.startswith("SASL"):
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return options

    def faust_credentials(self) -> Any:
        """The same security for Faust's ``broker_credentials`` (None for PLAINTEXT).

        >>> Settings().faust_credentials() is None
        True
        """
        import faust

        protocol = self.security_protocol
        if protocol == "PLAINTEXT":
            return None
        context = self.ssl_context() if protocol.endswith("SSL") else None
        if protocol == "SSL":
            return faust.SSLCredentials(context)
        return faust.SASLCredentials(
            username=self.sasl_username, password=self.sasl_password, ssl_context=context, mechanism=self.sasl_mechanism
        )

    def ssl_context(self) -> Any:
        """The TLS context for Kafka connections: system CAs or ``ssl_cafile``, and a client certificate if set."""
        import ssl

        context = ssl.create_default_context(cafile=self.ssl_cafile or None)
        if self.ssl_certfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile or None)
        return context

    @property
    def bootstrap_servers(self) -> str:
        """The broker URL as aiokafka wants it."""
        return parse_broker_url(self.broker)

    def validate(self) -> Settings:
        """Check every field; raise :class:`ConfigError` naming the first bad one."""
        parse_broker_url(self.broker)
        if not re.match(r"^[A-Za-z0-9._-]{1,100}$", self.app_id):
            raise ConfigError(f"app_id: {self.app_id!r} must be letters, digits, '.', '_', '-'")
        for f in fields(self.topics):
            name = getattr(self.topics, f.name)
            if not re.match(r"^[A-Za-z0-9._-]{1,200}$", name):
                raise ConfigError(f"topics.{f.name}: {name!r} is not a valid topic name")
        _positive("partitions", self.partitions, integer=True)
        _positive("web_port", self.web_port, integer=True)
        if self.web_port > 65535:
            raise ConfigError(f"web_port: {self.web_port} is above 65535")
        for name in ("window_s", "hopping_s", "hop_s"):
            value = getattr(self, name)
            _positive(name, value)
            if value != int(value):
                raise ConfigError(f"{name}: {value!r} must be a whole number of seconds")
        if self.hopping_s % self.hop_s:
            raise ConfigError(f"hopping_s: {self.hopping_s:g} must be a multiple of hop_s ({self.hop_s:g})")
        if self.lateness_s < 0:
            raise ConfigError(f"lateness_s: {self.lateness_s!r} must not be negative")
        _positive("reference_events", self.reference_events, integer=True)
        if self.reference_min_s < 0:
            raise ConfigError(f"reference_min_s: {self.reference_min_s!r} must not be negative")
        _positive("alert_cooldown_s", self.alert_cooldown_s)
        if self.resolve_after_s < 0:
            raise ConfigError(f"resolve_after_s: {self.resolve_after_s!r} must not be negative")
        if not 0 < self.drift_alpha < 1:
            raise ConfigError(f"drift_alpha: {self.drift_alpha!r} must be between 0 and 1")
        _positive("drift_min_psi", self.drift_min_psi)
        if self.join_predictions not in ("auto", "always", "never"):
            raise ConfigError(f"join_predictions: {self.join_predictions!r} must be auto, always or never")
        _positive("label_ttl_s", self.label_ttl_s)
        _positive("max_future_s", self.max_future_s)
        if self.earliest_timestamp < 0:
            raise ConfigError(f"earliest_timestamp: {self.earliest_timestamp!r} must not be negative")
        _positive("retrain_after_s", self.retrain_after_s)
        _positive("performance_window", self.performance_window, integer=True)
        _positive("performance_margin", self.performance_margin)
        _positive("max_features", self.max_features, integer=True)
        _positive("max_categories", self.max_categories, integer=True)
        if self.monitors_file and not os.path.isfile(self.monitors_file):
            raise ConfigError(f"monitors_file: {self.monitors_file!r} is not a file")
        if self.profile_dir and not os.path.isdir(self.profile_dir):
            raise ConfigError(f"profile_dir: {self.profile_dir!r} is not a folder")
        _positive("zscore_threshold", self.zscore_threshold)
        _positive("zscore_warmup", self.zscore_warmup, integer=True)
        _positive("zscore_min_outliers", self.zscore_min_outliers, integer=True)
        _positive("connect_timeout_s", self.connect_timeout_s)
        _positive("group_timeout_s", self.group_timeout_s)
        _positive("shutdown_grace_s", self.shutdown_grace_s)
        _positive("metrics_max_models", self.metrics_max_models, integer=True)
        _positive("checkpoint_interval_s", self.checkpoint_interval_s)
        _positive("checkpoint_max_records", self.checkpoint_max_records, integer=True)
        _positive("ingest_batch_records", self.ingest_batch_records, integer=True)
        _positive("ingest_wait_s", self.ingest_wait_s)
        _positive("state_cache_models", self.state_cache_models, integer=True)
        protocols = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
        if self.security_protocol not in protocols:
            raise ConfigError(f"security_protocol: {self.security_protocol!r} is not one of {', '.join(protocols)}")
        mechanisms = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
        if self.sasl_mechanism not in mechanisms:
            raise ConfigError(f"sasl_mechanism: {self.sasl_mechanism!r} is not one of {', '.join(mechanisms)}")
        if self.security_protocol.startswith("SASL") and not (self.sasl_username and self.sasl_password):
            raise ConfigError("sasl_username: SASL needs sasl_username and sasl_password")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise ConfigError(f"{name}: {path!r} is not a file")
        for name in ("text_key", "hash_key"):
            if getattr(self, name):
                from stream.privacy.protect import key_from_text

                key_from_text(getattr(self, name), name)
        if self.sensitive_fields and not self.hash_key:
            raise ConfigError("hash_key: sensitive_fields are hashed with hash_key, which is not set")
        return self

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``STREAM_MONITOR_*`` variables, then explicit overrides.

        >>> Settings.from_env({"STREAM_MONITOR_PARTITIONS": "8"}).partitions
        8
        >>> Settings.from_env({"STREAM_MONITOR_PARTITIONS": "many"})
        Traceback (most recent call last):
        ...
        stream.config.ConfigError: partitions (STREAM_MONITOR_PARTITIONS): 'many' is not a int
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        topic_values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "topics":
                for tf in fields(Topics):
                    var = f"{ENV_PREFIX}TOPIC_{tf.name.upper()}"
                    if var in env:
                        topic_values[tf.name] = env[var]
                continue
            var = ENV_PREFIX + f.name.upper()
            if var in env:
                values[f.name] = _convert(f.name, var, env[var], f.type)
        settings = cls(**values)
        if topic_values:
            settings = replace(settings, topics=replace(settings.topics, **topic_values))
        clean = {k: v for k, v in overrides.items() if v is not None}
        topic_over = {k: clean.pop(k) for k in list(clean) if k.startswith("topic_")}
        settings = replace(settings, **clean)
        if topic_over:
            topics = replace(settings.topics, **{k[6:]: v for k, v in topic_over.items()})
            settings = replace(settings, topics=topics)
        return settings.validate()


def _convert(name: str, var: str, raw: str, type_name: Any) -> Any:
    if str(type_name) == "bool":
        if raw.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if raw.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{name} ({var}): {raw!r} is not a yes/no value")
    kind = {"int": int, "float": float, "str": str}.get(str(type_name), str)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} ({var}): {raw!r} is not a {kind.__name__}") from None
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{name} ({var}): {raw!r} is not a finite number")
    return value


def _positive(name: str, value: Any, integer: bool = False) -> None:
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{name}: {value!r} must be a whole number")
    if not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{name}: {value!r} must be greater than 0")

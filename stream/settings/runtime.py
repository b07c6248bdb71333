"""The worker's runtime settings: connection, topics, web, checkpoints, security; from the environment or flags.

Every setting has a default that works on the embedded broker. A wrong value
stops the program with a :class:`~stream.settings.common.ConfigError` that
names the setting.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any

from stream.settings.common import ENV_PREFIX, ConfigError, convert, parse_broker_url, positive
from stream.settings.detection import DetectionSettings

JOIN_STORES = ("rocksdb", "memory")


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
    """What a worker, the SDK and the CLI need to agree on: connection, topics, web, checkpoints, security.

    The detection settings are one field, :attr:`detection`, handed to the
    monitoring domain as they are.
    """

    broker: str = "kafka://127.0.0.1:9092"
    app_id: str = "stream-monitor"
    topics: Topics = field(default_factory=Topics)
    partitions: int = 4
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # When set, /models, /models/*/stats, /models/*/segments and /metrics require "Authorization: Bearer <token>".
    web_token: str = field(default="", repr=False)
    # Event timestamps beyond the worker's clock by more than this, or before
    # earliest_timestamp (2000-01-01), are dead-lettered: one event stamped in
    # the far future would close every window of its model.
    max_future_s: float = 300.0
    earliest_timestamp: float = 946_684_800.0
    # Folder of reference profiles (see stream.monitoring.profiles); read by the worker, not by the domain.
    profile_dir: str = ""
    # TOML file of detectors per model and signal (see stream.monitoring.monitor_file); empty: built-in defaults.
    monitors_file: str = ""
    label_ttl_s: float = 6 * 3600.0
    # Where the label join keeps its entries: "rocksdb" on disk under data_dir, or "memory".
    # It holds one entry per prediction for label_ttl_s; in memory that grew without bound
    # with the rate, and a replacement worker had to read all of it back from the changelog.
    join_store: str = "rocksdb"
    # Per-model series on /metrics for at most this many models per worker;
    # beyond it, one warning and a count, so Prometheus is not flooded.
    metrics_max_models: int = 200
    # Differential privacy for exported segment figures (0: off): epsilon per segment per window, and the
    # epsilon a segment may spend a day (see stream.privacy.noise).
    slice_noise_epsilon: float = 0.0
    slice_noise_budget: float = 0.0
    # A model's state goes to its changelog at most once per interval (and
    # its input records are committed only then), not once per record; a
    # crash replays at most this much, and the offsets saved in the state
    # keep the replay from counting twice. Every checkpoint encodes each changed model's state
    # while the ingest waits, so a shorter interval delays every record behind it.
    checkpoint_interval_s: float = 3.0
    # ... or sooner, once this many input records, or megabytes of them, wait for a checkpoint.
    checkpoint_max_records: int = 20_000
    checkpoint_max_mb: float = 64.0
    # The ingest task takes up to this many records, or megabytes of them, at a time,
    # waiting at most ingest_wait_s for them, and applies each model's share in one go.
    # Bigger takes give the detectors bigger batches when the worker is behind, and hold
    # more fetched records in memory: up to two takes' worth of records or four of megabytes.
    ingest_batch_records: int = 20_000
    ingest_batch_mb: float = 8.0
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
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    # Faust's working folder, where the label join's RocksDB files live. One per
    # worker: two workers must not share it (RocksDB locks its files). Set it to
    # a volume of the worker's own to keep the join across restarts: a worker
    # restarted on it reads only the changelog written since. By default each
    # worker process has a new one (see data_path).
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
        """Faust's data folder: ``data_dir``, or this process's own in the temp folder (see :attr:`data_root`).

        Not reused by default: a folder outlives the topics it mirrors (a new
        embedded broker, topics deleted), and Faust then stops on the offsets
        its RocksDB files remember.
        """
        return self.data_dir or os.path.join(self.data_root, str(os.getpid()))

    @property
    def data_root(self) -> str:
        """Where the default data folders of this app id's workers go, one per process id."""
        return os.path.join(tempfile.gettempdir(), "stream-monitor", self.app_id)

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
        positive("partitions", self.partitions, integer=True)
        positive("web_port", self.web_port, integer=True)
        if self.web_port > 65535:
            raise ConfigError(f"web_port: {self.web_port} is above 65535")
        positive("label_ttl_s", self.label_ttl_s)
        if self.join_store not in JOIN_STORES:
            raise ConfigError(f"join_store: {self.join_store!r} is not one of {', '.join(JOIN_STORES)}")
        positive("max_future_s", self.max_future_s)
        if self.earliest_timestamp < 0:
            raise ConfigError(f"earliest_timestamp: {self.earliest_timestamp!r} must not be negative")
        if self.monitors_file and not os.path.isfile(self.monitors_file):
            raise ConfigError(f"monitors_file: {self.monitors_file!r} is not a file")
        if self.profile_dir and not os.path.isdir(self.profile_dir):
            raise ConfigError(f"profile_dir: {self.profile_dir!r} is not a folder")
        positive("connect_timeout_s", self.connect_timeout_s)
        positive("group_timeout_s", self.group_timeout_s)
        positive("shutdown_grace_s", self.shutdown_grace_s)
        positive("metrics_max_models", self.metrics_max_models, integer=True)
        if self.slice_noise_epsilon < 0:
            raise ConfigError(f"slice_noise_epsilon: {self.slice_noise_epsilon!r} must not be negative")
        if self.slice_noise_epsilon and self.slice_noise_budget < self.slice_noise_epsilon:
            raise ConfigError(
                f"slice_noise_budget: {self.slice_noise_budget!r} must be at least slice_noise_epsilon "
                f"({self.slice_noise_epsilon!r}): the epsilon each segment may spend a day"
            )
        positive("checkpoint_interval_s", self.checkpoint_interval_s)
        positive("checkpoint_max_records", self.checkpoint_max_records, integer=True)
        positive("checkpoint_max_mb", self.checkpoint_max_mb)
        positive("ingest_batch_records", self.ingest_batch_records, integer=True)
        positive("ingest_batch_mb", self.ingest_batch_mb)
        positive("ingest_wait_s", self.ingest_wait_s)
        positive("state_cache_models", self.state_cache_models, integer=True)
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
        self.detection.validate()
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``STREAM_MONITOR_*`` variables, then explicit overrides; validated.

        Detection settings are named like the others (``STREAM_MONITOR_WINDOW_S``,
        ``window_s=``) and land in :attr:`detection`.

        >>> Settings.from_env({"STREAM_MONITOR_PARTITIONS": "8", "STREAM_MONITOR_WINDOW_S": "30"}).detection.window_s
        30.0
        >>> Settings.from_env({"STREAM_MONITOR_PARTITIONS": "many"})
        Traceback (most recent call last):
        ...
        stream.settings.common.ConfigError: partitions (STREAM_MONITOR_PARTITIONS): 'many' is not a whole number
        """
        env = os.environ if env is None else env
        values = _read_env(env, [f for f in fields(cls) if f.name not in ("topics", "detection")])
        detection = _read_env(env, fields(DetectionSettings))
        topics = {
            tf.name: env[f"{ENV_PREFIX}TOPIC_{tf.name.upper()}"]
            for tf in fields(Topics)
            if f"{ENV_PREFIX}TOPIC_{tf.name.upper()}" in env
        }
        for name, value in overrides.items():
            if value is None:
                continue
            if name.startswith("topic_"):
                topics[name[len("topic_") :]] = value
            elif name in DETECTION_FIELDS:
                detection[name] = value
            else:
                values[name] = value
        return cls(**values, topics=Topics(**topics), detection=DetectionSettings(**detection)).validate()


DETECTION_FIELDS = frozenset(f.name for f in fields(DetectionSettings))


def _read_env(env: Mapping[str, str], wanted: Iterable[Field[Any]]) -> dict[str, Any]:
    values = {}
    for f in wanted:
        var = ENV_PREFIX + f.name.upper()
        if var in env:
            values[f.name] = convert(f.name, var, env[var], f.type)
    return values

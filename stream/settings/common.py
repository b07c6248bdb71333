"""What every setting shares: the error that names a bad one, the broker URL, and reading values from text."""

from __future__ import annotations

import math
import re
from typing import Any

ENV_PREFIX = "STREAM_MONITOR_"
_HOSTPORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class ConfigError(ValueError):
    """A setting is wrong; the message names it and says what is expected."""


class InstallError(ImportError):
    """The installed packages cannot run this; the message says what to install."""


def parse_broker_url(url: str) -> str:
    """Turn ``kafka://HOST:PORT[,HOST:PORT]`` into aiokafka's bootstrap string.

    >>> parse_broker_url("kafka://127.0.0.1:9092")
    '127.0.0.1:9092'
    >>> parse_broker_url("localhost:9092;kafka://b2:9093")
    'localhost:9092,b2:9093'
    >>> parse_broker_url("http://x")
    Traceback (most recent call last):
    ...
    stream.settings.common.ConfigError: broker: 'http://x' is not of the form kafka://HOST:PORT
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


def convert(name: str, var: str, raw: str, type_name: Any) -> Any:
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
        expected = {int: "whole number", float: "number"}[kind]
        raise ConfigError(f"{name} ({var}): {raw!r} is not a {expected}") from None
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{name} ({var}): {raw!r} is not a finite number")
    return value


def positive(name: str, value: Any, integer: bool = False) -> None:
    if integer and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{name}: {value!r} must be a whole number")
    if not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{name}: {value!r} must be greater than 0")

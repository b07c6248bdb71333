"""Dead-letter messages: the original bytes of a bad input and the reason."""

from __future__ import annotations

import base64
import os
import socket
import time
from typing import Any

from stream.contracts import SCHEMA_VERSION
from stream.contracts.codec import Reject

WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
# Kafka refuses records over about 1 MB by default; a dead letter of a record
# near that size, in base64, would not fit and must not stop the worker.
MAX_VALUE_BYTES = 256 * 1024


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def dead_letter(reject: Reject, *, topic: str, partition: int, offset: int, key: bytes | None) -> dict[str, Any]:
    """The dead-letter message for ``reject``, read from topic/partition/offset.

    >>> from stream.contracts.codec import Reject
    >>> msg = dead_letter(Reject("bad", "invalid_json", b"x"), topic="t",
    ...                   partition=0, offset=7, key=b"m")
    >>> msg["source"], msg["value_b64"]
    ({'topic': 't', 'partition': 0, 'offset': 7, 'key_b64': 'bQ=='}, 'eA==')
    """
    source: dict[str, Any] = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key_b64": _b64(None if key is None else key[:4096]),
    }
    if reject.event_index is not None:
        source["event_index"] = reject.event_index
    value = reject.value or b""
    letter = {
        "schema_version": SCHEMA_VERSION,
        "reason": reject.reason[:4096],
        "error_type": reject.error_type,
        "source": source,
        "value_b64": _b64(value[:MAX_VALUE_BYTES]),
        "timestamp": time.time(),
        "worker": WORKER_NAME,
    }
    if len(value) > MAX_VALUE_BYTES:
        letter["value_bytes"] = len(value)
    return letter

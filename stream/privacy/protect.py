"""Privacy at the source: drop, hash or redact fields, and encrypt LLM text, before an event leaves a service.

Field names are top-level (``client_id``, ``input_text``) or ``features.NAME``.
Hashes are keyed (HMAC-SHA256), so nobody without the key can test guesses
against them, yet equal values still hash equally (categories, client ids
keep working). Text is encrypted with AES-GCM under a 256-bit key the workers
hold (``STREAM_MONITOR_TEXT_KEY``); the model name is bound as associated
data, so a ciphertext cannot be replayed under another model.

>>> key = generate_key()
>>> p = FieldProtection(hash_fields=["client_id"], drop=["features.ssn"], encrypt_text=True,
...                     hash_key=b"k" * 32, text_key=key)
>>> ev = p.apply({"model": "m", "client_id": "acme", "features": {"ssn": "078-05-1120", "x": 1},
...               "output_text": "hello"})
>>> ev["client_id"].startswith("h:"), "ssn" in ev["features"], ev["output_text"].startswith("enc:v1:")
(True, False, True)
>>> decrypt_text(ev["output_text"], key, "m")
'hello'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from collections.abc import Iterable
from typing import Any

from stream.privacy.pii import mask_all
from stream.settings import ConfigError

log = logging.getLogger(__name__)

TEXT_FIELDS = ("input_text", "output_text")
ENCRYPTED_PREFIX = "enc:v1:"
HASH_PREFIX = "h:"


def generate_key() -> bytes:
    """A fresh 256-bit key (for ``hash_key`` or ``text_key``)."""
    return os.urandom(32)


def key_from_text(text: str, name: str) -> bytes:
    """A key from its URL-safe base64 form (as kept in the environment); a bad one names ``name``.

    >>> len(key_from_text(base64.urlsafe_b64encode(b"x" * 32).decode(), "text_key"))
    32
    >>> key_from_text("short", "text_key")
    Traceback (most recent call last):
    ...
    stream.settings.common.ConfigError: text_key: must be 32 bytes in URL-safe base64 (44 characters)
    """
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{name}: must be 32 bytes in URL-safe base64 (44 characters)")
    return key


def keyed_hash(value: Any, key: bytes) -> str:
    """``h:`` and the first 32 hex digits of HMAC-SHA256 of ``value`` (as text) under ``key``.

    >>> keyed_hash("acme", b"k" * 32) == keyed_hash("acme", b"k" * 32) != keyed_hash("acme", b"j" * 32)
    True
    """
    digest = hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()
    return HASH_PREFIX + digest[:32]


def encrypt_text(text: str, key: bytes, model: str) -> str:
    """``enc:v1:`` and base64 of a random 96-bit nonce and the AES-GCM ciphertext of ``text``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, text.encode(), model.encode())
    return ENCRYPTED_PREFIX + base64.b64encode(nonce + sealed).decode()


def decrypt_text(value: str, key: bytes, model: str) -> str:
    """The text :func:`encrypt_text` sealed; raises ``ValueError`` when the key or the model is wrong."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    raw = base64.b64decode(value[len(ENCRYPTED_PREFIX) :])
    try:
        return AESGCM(key).decrypt(raw[:12], raw[12:], model.encode()).decode()
    except InvalidTag:
        raise ValueError("text does not decrypt with this key for this model") from None


class FieldProtection:
    """What the SDK does to each event before sending it: drop, hash, redact, encrypt."""

    def __init__(
        self,
        *,
        drop: Iterable[str] = (),
        hash_fields: Iterable[str] = (),
        redact: Iterable[str] = (),
        encrypt_text: bool = False,
        hash_key: bytes | None = None,
        text_key: bytes | None = None,
    ) -> None:
        self.drop = list(drop)
        self.hash_fields = list(hash_fields)
        self.redact = list(redact)
        self.encrypt = encrypt_text
        if self.hash_fields and (hash_key is None or len(hash_key) < 16):
            raise ConfigError("hash_key: hashing fields needs a key of at least 16 bytes")
        if encrypt_text and (text_key is None or len(text_key) != 32):
            raise ConfigError("text_key: encrypting text needs a 32-byte key")
        self.hash_key = hash_key or b""
        self.text_key = text_key or b""

    def apply(self, event: dict[str, Any]) -> dict[str, Any]:
        """A protected copy of ``event`` (the original is left as it is)."""
        out = dict(event)
        if isinstance(out.get("features"), dict):
            out["features"] = dict(out["features"])
        for name in self.drop:
            _pop(out, name)
        for name in self.hash_fields:
            _replace(out, name, self._hash)
        for name in self.redact:
            _replace(out, name, lambda v: mask_all(v) if isinstance(v, str) else "[REDACTED]")
        if self.encrypt:
            for name in TEXT_FIELDS:
                _replace(out, name, lambda v: encrypt_text(v, self.text_key, out["model"]) if isinstance(v, str) else v)
        return out

    def _hash(self, value: Any) -> str:
        # A value hashed already (by the SDK, then again by the worker) keeps its hash: same key, same value.
        return value if isinstance(value, str) and value.startswith(HASH_PREFIX) else keyed_hash(value, self.hash_key)


def _container(event: dict[str, Any], name: str) -> tuple[dict[str, Any] | None, str]:
    if name.startswith("features."):
        features = event.get("features")
        return (features if isinstance(features, dict) else None), name[len("features.") :]
    return event, name


def _pop(event: dict[str, Any], name: str) -> None:
    holder, key = _container(event, name)
    if holder is not None:
        holder.pop(key, None)


def _replace(event: dict[str, Any], name: str, change: Any) -> None:
    holder, key = _container(event, name)
    if holder is not None and holder.get(key) is not None:
        holder[key] = change(holder[key])


class EventPrivacy:
    """What a worker does to events before anything looks at them: sensitive fields hashed, text decrypted.

    >>> from stream.settings import Settings
    >>> key = base64.urlsafe_b64encode(b"k" * 32).decode()
    >>> privacy = EventPrivacy(Settings(sensitive_fields="client_id,features.email", hash_key=key))
    >>> ev = privacy.prepare([{"client_id": "acme", "features": {"email": "a@b.io", "x": 1}}], "m")[0]
    >>> ev["client_id"].startswith("h:"), ev["features"]["email"].startswith("h:"), ev["features"]["x"]
    (True, True, 1)
    """

    def __init__(self, settings: Any) -> None:
        self.hashing = (
            FieldProtection(hash_fields=settings.sensitive, hash_key=key_from_text(settings.hash_key, "hash_key"))
            if settings.sensitive
            else None
        )
        self.text = TextReader(key_from_text(settings.text_key, "text_key") if settings.text_key else None)

    def prepare(self, events: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
        """``events`` with sensitive values hashed and encrypted text readable (or removed)."""
        if self.hashing is not None:
            events = [self.hashing.apply(event) for event in events]
        return self.text.readable(events, model)


class TextReader:
    """The worker's side: LLM text in clear, decrypted with the key it holds, or None.

    Without a key an encrypted text is skipped, and the worker says so once.
    """

    def __init__(self, key: bytes | None) -> None:
        self.key = key
        self.skipped = 0
        self.undecryptable = 0
        self._warned = False

    def readable(self, events: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
        """``events`` with their text fields in clear; encrypted ones this worker cannot read removed."""
        if not any("input_text" in e or "output_text" in e for e in events):
            return events  # most models carry no text: one pass, no copies
        out = []
        for event in events:
            sealed = [n for n in TEXT_FIELDS if isinstance(v := event.get(n), str) and v.startswith(ENCRYPTED_PREFIX)]
            if sealed:
                event = dict(event)
                for name in sealed:
                    clear = self._decrypt(event.pop(name), model)
                    if clear is not None:
                        event[name] = clear
            out.append(event)
        return out

    def _decrypt(self, value: str, model: str) -> str | None:
        if self.key is None:
            self.skipped += 1
            if not self._warned:
                self._warned = True
                log.warning(
                    "encrypted LLM text arrives but this worker has no STREAM_MONITOR_TEXT_KEY: "
                    "private-data checks of text are skipped"
                )
            return None
        try:
            return decrypt_text(value, self.key, model)
        except ValueError:
            self.undecryptable += 1
            return None

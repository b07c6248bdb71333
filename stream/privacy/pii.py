"""Personal and secret data in text, found by format and checked by checksum where one exists.

Each finder returns :class:`PiiHit` values with the kind, where it is and a
redacted excerpt that never holds the value itself. Numbers that look like a
card, an IBAN or a Chinese resident identity number must pass their checksum
(Luhn, ISO 7064 mod 97-10, ISO 7064 mod 11-2), which keeps order numbers and
timestamps from being reported.

>>> [h.kind for h in find_pii("mail jane.doe@example.com or card 4111 1111 1111 1111")]
['email', 'payment_card']
>>> find_pii("order 4111 1111 1111 1112 shipped")   # fails the Luhn check
[]
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

EXCERPT_CHARS = 24


@dataclass(frozen=True)
class PiiHit:
    """One finding: its kind, its span in the text and an excerpt with the value masked."""

    kind: str
    start: int
    end: int
    excerpt: str


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of payment card numbers.

    >>> luhn_valid("4111111111111111"), luhn_valid("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616 check digits (mod 97 == 1).

    >>> iban_valid("GB82WEST12345698765432"), iban_valid("GB82WEST12345698765433")
    (True, False)
    """
    iban = iban.replace(" ", "").upper()
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def cn_resident_id_valid(number: str) -> bool:
    """The check character of an 18-character Chinese resident identity number (ISO 7064 mod 11-2).

    >>> cn_resident_id_valid("11010519491231002X"), cn_resident_id_valid("110105194912310021")
    (True, False)
    """
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], CN_ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11] == number[17].upper()


def _card(match: re.Match[str]) -> bool:
    digits = re.sub(r"[ -]", "", match.group(0))
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _iban(match: re.Match[str]) -> bool:
    return iban_valid(match.group(0))


def _cn_id(match: re.Match[str]) -> bool:
    number = match.group(0)
    month, day = int(number[10:12]), int(number[12:14])
    return 1 <= month <= 12 and 1 <= day <= 31 and cn_resident_id_valid(number)


def _ip(match: re.Match[str]) -> bool:
    try:
        address = ipaddress.ip_address(match.group(0))
    except ValueError:
        return False
    # Version strings such as 1.2.3.4 are common in ordinary text; loopback and unspecified leak nothing.
    return not (address.is_loopback or address.is_unspecified)


def _phone(match: re.Match[str]) -> bool:
    digits = re.sub(r"\D", "", match.group(0))
    return 8 <= len(digits) <= 15


# Order matters: the first finder to claim a span keeps it.
FINDERS: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], bool] | None]] = [
    ("private_key", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"), None),
    ("api_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), None),  # AWS access key id
    ("api_key", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"), None),  # GitHub
    ("api_key", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"), None),  # Slack
    ("api_key", re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b"), None),  # OpenAI, Anthropic
    ("api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), None),  # Google
    ("api_key", re.compile(r"\b(?:sk|rk)_live_[0-9A-Za-z]{20,}\b"), None),  # Stripe
    ("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"), None),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), _iban),
    ("cn_resident_id", re.compile(r"\b[1-9]\d{5}(?:18|19|20)\d{2}\d{2}\d{2}\d{3}[\dXx]\b"), _cn_id),
    # Not the digits of a decimal fraction or of a longer number.
    ("payment_card", re.compile(r"(?<![\d.,])\d(?:[ -]?\d){12,18}(?![\d]|[.,]\d)"), _card),
    ("ip_address", re.compile(r"\b(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}\b"), _ip),
    ("ip_address", re.compile(r"(?<![:\w])(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}(?![:\w])"), _ip),
    (
        "phone",
        re.compile(r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}(?![.\d])"),
        _phone,
    ),
    ("phone", re.compile(r"(?<!\w)\(\d{3}\) ?\d{3}-\d{4}\b"), _phone),
]

KINDS = sorted({kind for kind, _, _ in FINDERS})

_DIGIT = re.compile(r"\d")
# What a text must contain for each finder to have a chance (in FINDERS order): most text has
# no digit, no '@' and no key prefix, and skipping those finders is what keeps a worker
# reading long LLM answers responsive.
_NEEDS: list[Callable[[str, bool], bool]] = [
    lambda t, d: "PRIVATE KEY" in t,
    lambda t, d: "AKIA" in t or "ASIA" in t,
    lambda t, d: "gh" in t and "_" in t,
    lambda t, d: "xox" in t,
    lambda t, d: "sk-" in t,
    lambda t, d: "AIza" in t,
    lambda t, d: "_live_" in t,
    lambda t, d: "@" in t,
    lambda t, d: d,
    lambda t, d: d,
    lambda t, d: d,
    lambda t, d: d,
    lambda t, d: ":" in t,
    lambda t, d: d and "+" in t,
    lambda t, d: d and "(" in t,
]
assert len(_NEEDS) == len(FINDERS)


def redact(text: str, start: int, end: int, context: int = EXCERPT_CHARS) -> str:
    """Up to ``context`` characters either side of ``[start, end)``, the value itself masked.

    >>> redact("my card is 4111111111111111, thanks", 11, 27, context=8)
    '…card is [REDACTED:16], thanks'
    """
    left = text[max(0, start - context) : start]
    right = text[end : end + context]
    before = "…" if start > context else ""
    after = "…" if end + context < len(text) else ""
    return f"{before}{left}[REDACTED:{end - start}]{right}{after}"


def find_pii(text: str, kinds: set[str] | None = None) -> list[PiiHit]:
    """Every personal or secret value in ``text`` (of ``kinds``, default all), in text order."""
    hits: list[PiiHit] = []
    taken: list[tuple[int, int]] = []
    digits = _DIGIT.search(text) is not None
    for (kind, pattern, check), needs in zip(FINDERS, _NEEDS, strict=True):
        if (kinds is not None and kind not in kinds) or not needs(text, digits):
            continue
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < e and s < end for s, e in taken):
                continue
            if check is not None and not check(match):
                continue
            taken.append((start, end))
            hits.append(PiiHit(kind, start, end, ""))
    if not hits:
        return []
    # Excerpts come from the text with every hit masked, so one value's context never shows another.
    masked = list(text)
    for s, e in taken:
        masked[s:e] = "*" * (e - s)
    shown = "".join(masked)
    return sorted((PiiHit(h.kind, h.start, h.end, redact(shown, h.start, h.end)) for h in hits), key=lambda h: h.start)


def mask_all(text: str) -> str:
    """``text`` with every value :func:`find_pii` finds replaced by ``[KIND]``.

    >>> mask_all("write to jane@example.com")
    'write to [EMAIL]'
    """
    out, at = [], 0
    for hit in find_pii(text):
        out += [text[at : hit.start], f"[{hit.kind.upper()}]"]
        at = hit.end
    return "".join(out) + text[at:]


def iter_text_fields(event: dict) -> Iterator[tuple[str, str]]:
    """The LLM text fields of an event that are present: ``input_text``, ``output_text``."""
    for name in ("input_text", "output_text"):
        value = event.get(name)
        if isinstance(value, str) and value:
            yield name, value

"""Security findings: private data in LLM outputs, and clients that burst, probe or repeat themselves.

``PrivateDataRule`` scans ``output_text`` (and counts hits in ``input_text``)
with :mod:`stream.privacy.pii`; evidence carries kinds, fields and redacted
excerpts, never a value. Client abuse is :mod:`stream.detectors.client_abuse`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from stream.detectors.base import Finding, check_state_version, tumbling_window
from stream.privacy.pii import find_pii, iter_text_fields
from stream.stats.columns import BatchColumns
from stream.stats.window_stats import window_start

# Kinds whose leak is an incident by itself; e-mail, phone and IP addresses are warnings.
CRITICAL_KINDS = {"payment_card", "iban", "cn_resident_id", "api_key", "private_key"}

# The layout of PrivateDataRule.to_dict; a state without a version has this layout too (see check_state_version).
STATE_VERSION = 1


class PrivateDataRule:
    """A finding per window when model outputs carry personal or secret data.

    >>> rule = PrivateDataRule(window_s=60)
    >>> ev = lambda t, text: {"timestamp": t, "output_text": text}
    >>> rule.update([ev(1.0, "hello"), ev(2.0, "your card 4111 1111 1111 1111 is on file")])[0].evidence["kinds"]
    {'payment_card': 1}
    >>> rule.update([ev(3.0, "again 4111111111111111")])   # once per window
    []
    """

    name = "private_data"

    def __init__(self, window_s: float = 60.0, max_excerpts: int = 3) -> None:
        self.window_s = window_s
        self.max_excerpts = max_excerpts
        self.window_start: float | None = None
        self.fired = False
        self.input_hits = 0

    def update(self, events: list[dict[str, Any]], columns: BatchColumns | None = None) -> list[Finding]:
        """Scan the text fields of ``events`` (already decrypted); at most one finding per window."""
        out: list[Finding] = []
        hits: list[tuple[str, Any, float]] = []
        for event in [e for e in events if "output_text" in e or "input_text" in e]:
            start = window_start(event["timestamp"], self.window_s)
            if self.window_start is None or start > self.window_start:
                self.window_start, self.fired, self.input_hits = start, False, 0
            for field, text in iter_text_fields(event):
                found = find_pii(text)
                if field == "input_text":
                    self.input_hits += len(found)
                else:
                    hits += [(field, hit, event["timestamp"]) for hit in found]
        if hits and not self.fired and self.window_start is not None:
            self.fired = True
            kinds = Counter(hit.kind for _, hit, _ in hits)
            worst = "critical" if CRITICAL_KINDS & set(kinds) else "warning"
            names = ", ".join(_count_of(n, k) for k, n in kinds.most_common())
            out.append(
                Finding(
                    signal="output_text",
                    detector=self.name,
                    kind="security",
                    severity=worst,
                    value=float(len(hits)),
                    threshold=0.0,
                    baseline={"expected_hits": 0},
                    message=f"model output carries private data this window: {names} (values withheld).",
                    event_time=hits[-1][2],
                    window=tumbling_window(self.window_start, self.window_s),
                    evidence={
                        "kinds": dict(kinds),
                        "fields": sorted({f for f, _, _ in hits}),
                        "excerpts": [{"kind": h.kind, "field": f, "excerpt": h.excerpt} for f, h, _ in hits][
                            : self.max_excerpts
                        ],
                        "input_hits_this_window": self.input_hits,
                    },
                )
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {
            "state_version": STATE_VERSION,
            "window_start": self.window_start,
            "fired": self.fired,
            "input_hits": self.input_hits,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_dict` saved."""
        check_state_version(state, STATE_VERSION, "private_data")
        self.window_start, self.fired = state["window_start"], state["fired"]
        self.input_hits = state["input_hits"]


def _count_of(n: int, kind: str) -> str:
    """``n`` findings of a private-data kind, in words.

    >>> _count_of(1, "payment_card"), _count_of(2, "payment_card"), _count_of(3, "email"), _count_of(2, "iban")
    ('1 payment card number', '2 payment card numbers', '3 email addresses', '2 IBANs')
    """
    singular, plural = _KIND_WORDS.get(kind, (kind.replace("_", " "), kind.replace("_", " ") + "s"))
    return f"{n} {singular if n == 1 else plural}"


_KIND_WORDS = {
    "api_key": ("API key", "API keys"),
    "cn_resident_id": ("Chinese resident ID", "Chinese resident IDs"),
    "email": ("email address", "email addresses"),
    "iban": ("IBAN", "IBANs"),
    "ip_address": ("IP address", "IP addresses"),
    "payment_card": ("payment card number", "payment card numbers"),
    "phone": ("phone number", "phone numbers"),
    "private_key": ("private key", "private keys"),
}

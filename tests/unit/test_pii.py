"""Private-data finders: true and false cases for each kind, checksums included, and excerpts that never leak."""

from __future__ import annotations

import pytest

from stream.privacy.pii import cn_resident_id_valid, find_pii, iban_valid, luhn_valid, mask_all


def kinds(text: str) -> list[str]:
    return [hit.kind for hit in find_pii(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contact jane.doe+test@mail.example.co.uk today", ["email"]),
        ("visa 4111 1111 1111 1111 exp 12/29", ["payment_card"]),
        ("amex 3782-822463-10005", ["payment_card"]),
        ("mastercard 5555555555554444", ["payment_card"]),
        ("IBAN GB82 WEST 1234 5698 7654 32 please", ["iban"]),
        ("pay to DE89370400440532013000", ["iban"]),
        ("身份证 11010519491231002X", ["cn_resident_id"]),
        ("server at 192.168.10.24 is down", ["ip_address"]),
        ("v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334 answers", ["ip_address"]),
        ("call +44 20 7946 0958 now", ["phone"]),
        ("call (415) 555-2671", ["phone"]),
        ("key AKIAIOSFODNN7EXAMPLE in the log", ["api_key"]),
        ("token ghp_" + "a" * 36, ["api_key"]),
        ("OPENAI_API_KEY=sk-proj-" + "Ab3" * 10, ["api_key"]),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE", ["private_key"]),
    ],
)
def test_finds_each_kind(text, expected):
    assert kinds(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 shipped",  # fails Luhn
        "IBAN GB82 WEST 1234 5698 7654 33",  # wrong check digits
        "id 110105194912310021",  # wrong check character
        "id 110105194913310028",  # month 13
        "release 3.11.7 on 2026-11-23 at 12:30",
        "loopback 127.0.0.1 and 0.0.0.0",
        "the ratio was 1234567890123 to 1",  # long number, not Luhn-valid
        "ask at the desk (room 12)",
        "sk-short",
        "user@localhost",
        "error code 404 after 1500 ms",
    ],
)
def test_ordinary_text_is_not_reported(text):
    assert kinds(text) == []


def test_checksums():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert iban_valid("FR1420041010050500013M02606") and not iban_valid("FR1420041010050500013M02607")
    assert cn_resident_id_valid("110101199003074477") and not cn_resident_id_valid("110101199003074478")


def test_excerpts_mask_the_value_and_its_neighbours():
    text = "cards 4111111111111111 and 5555555555554444 on file"
    hits = find_pii(text)
    assert [h.kind for h in hits] == ["payment_card", "payment_card"]
    for hit in hits:
        assert "4111111111111111" not in hit.excerpt and "5555555555554444" not in hit.excerpt
        assert "[REDACTED:16]" in hit.excerpt
    assert "1111" not in hits[1].excerpt  # the first card, in the second's context, is masked too


def test_mask_all_leaves_no_value():
    text = "mail a@b.io, card 4111-1111-1111-1111, ip 10.1.2.3"
    masked = mask_all(text)
    assert masked == "mail [EMAIL], card [PAYMENT_CARD], ip [IP_ADDRESS]"

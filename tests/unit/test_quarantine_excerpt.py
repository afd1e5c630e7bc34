"""The quarantine keeps a capped excerpt of refused input with personal data masked."""

from __future__ import annotations

import time

import pytest

from domain.quarantine import EXCERPT_CHARS, mask_personal_data, quarantine_excerpt


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("c1,a1,Jane Doe,jane.doe@acme.com,partner", "c1,a1,Jane Doe,<email>,partner"),
        ('{"email": "JANE@Acme.COM"}', '{"email": "<email>"}'),
        ("a@b@c.com", "<email>"),
        ("jane\\u0040acme.com", "<email>"),
        ("jane%40acme.com", "<email>"),
        ("<jane@acme.com>", "<<email>>"),
    ],
)
def test_email_addresses_are_replaced_whole(text: str, masked: str) -> None:
    assert mask_personal_data(text) == masked


@pytest.mark.parametrize(
    "phone",
    [
        "+33 6 12 34 56 78",
        "+44 20 7946 0958",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "06 12 34 56 78",
        "0612345678",
        "+15551234567",
    ],
)
def test_phone_numbers_are_replaced_whole(phone: str) -> None:
    assert mask_personal_data(f'{{"phone": "{phone}"}}') == '{"phone": "<phone>"}'
    assert mask_personal_data(f"c1,{phone},x") == "c1,<phone>,x"


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26T10:00:00+01:00",
        "2026-11-26 10:00:00",
        "2026-11-26",
        "1234567.50",
        "20000",
        "score 10, csat 5",
        "acct_1Q2w3e4r5t6y7u8i",
        "cus_123456789012",
        "evt-123456789012",
        "deal 12345678",
        "@ alone, @@ twice",
    ],
)
def test_dates_amounts_ids_and_short_numbers_stay_readable(text: str) -> None:
    assert mask_personal_data(text) == text


def test_a_short_record_is_kept_whole_once_masked() -> None:
    assert quarantine_excerpt("e1,deal_won,jane@acme.com,1e30") == "e1,deal_won,<email>,1e30"


def test_a_long_record_is_cut_to_the_excerpt_length_with_a_mark() -> None:
    excerpt = quarantine_excerpt("x" * 5000)

    assert len(excerpt) == EXCERPT_CHARS
    assert excerpt.endswith("…")


def test_an_address_past_the_scanned_part_never_shows_in_part() -> None:
    raw = "a, " * 30_000 + "jane.doe.long.local.part@acme.com"

    assert "jane" not in quarantine_excerpt(raw, limit=200_000)


def test_control_characters_and_stray_bytes_are_escaped_so_any_database_stores_them() -> None:
    excerpt = quarantine_excerpt("abc\x00def\udc80\x1b[31m\tok")

    assert excerpt == "abc\\x00def\\udc80\\x1b[31m\tok"
    excerpt.encode("utf-8")  # raises on a lone surrogate


@pytest.mark.parametrize(
    "raw", ["a" * 60_000, "@" * 60_000, ("a" * 60 + "@") * 900, "1 " * 30_000, "(1)" * 20_000]
)
def test_masking_a_hostile_record_takes_linear_time(raw: str) -> None:
    started = time.perf_counter()
    quarantine_excerpt(raw)
    assert time.perf_counter() - started < 2.0

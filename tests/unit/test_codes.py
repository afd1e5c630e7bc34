"""Referral codes: unguessable, URL-safe, typed back in by people."""

from __future__ import annotations

import base64
import math
import string
from collections.abc import Callable
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.codes import CODE_BYTES, CODE_PREFIX, new_referral_code, normalize_code, referral_link

BASE32_ALPHABET = string.ascii_uppercase + "234567"


def fixed_bytes(data: bytes) -> Callable[[int], bytes]:
    def source(n: int) -> bytes:
        assert n == len(data)
        return data

    return source


def test_a_code_carries_at_least_80_bits_of_randomness() -> None:
    assert CODE_BYTES * 8 >= 80
    code = new_referral_code()
    body = code.removeprefix(CODE_PREFIX)
    # every body character is one of 32 symbols, so the body can hold that many bits
    assert set(body) <= set(BASE32_ALPHABET)
    assert len(body) * math.log2(len(BASE32_ALPHABET)) >= CODE_BYTES * 8


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(min_size=CODE_BYTES, max_size=CODE_BYTES))
def test_a_code_keeps_every_random_bit_it_was_made_from(raw: bytes) -> None:
    code = new_referral_code(fixed_bytes(raw))
    body = code.removeprefix(CODE_PREFIX)
    padding = "=" * (-len(body) % 8)
    assert base64.b32decode(body + padding) == raw


def test_codes_asked_for_in_a_row_are_all_different() -> None:
    codes = {new_referral_code() for _ in range(2000)}
    assert len(codes) == 2000


def test_a_code_asks_for_the_documented_number_of_random_bytes() -> None:
    asked: list[int] = []

    def source(n: int) -> bytes:
        asked.append(n)
        return bytes(n)

    new_referral_code(source)
    assert asked == [CODE_BYTES]


def test_a_code_is_url_safe_and_recognisable() -> None:
    code = new_referral_code()
    assert code.startswith(CODE_PREFIX)
    assert quote(code, safe="") == code
    assert code == code.upper()
    assert "=" not in code
    assert not set(code) & set("0189")  # base32 leaves out the look-alike digits


def test_injected_random_bytes_give_a_deterministic_code() -> None:
    raw = bytes(range(CODE_BYTES))
    first = new_referral_code(fixed_bytes(raw))
    assert first == new_referral_code(fixed_bytes(raw))
    assert first == CODE_PREFIX + base64.b32encode(raw).decode().rstrip("=")
    assert first != new_referral_code(fixed_bytes(bytes(reversed(raw))))


@pytest.mark.parametrize("size", [CODE_BYTES - 1, CODE_BYTES + 1, 0])
def test_a_random_source_returning_the_wrong_number_of_bytes_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match=f"need {CODE_BYTES} random bytes"):
        new_referral_code(lambda _n: bytes(size))


def test_a_fresh_code_is_already_in_normal_form() -> None:
    code = new_referral_code()
    assert normalize_code(code) == code


@pytest.mark.parametrize(
    "typed",
    [
        "{code}",
        "{lower}",
        " {code} ",
        "{code}\n",
        "{dashed}",
        "{spaced}",
        "{lower_dashed}",
    ],
)
def test_a_code_typed_by_a_person_normalizes_to_the_code(typed: str) -> None:
    code = new_referral_code(fixed_bytes(b"referral-123"))
    body = code[1:]
    chunks = [body[i : i + 4] for i in range(0, len(body), 4)]
    text = typed.format(
        code=code,
        lower=code.lower(),
        dashed=code[0] + "-" + "-".join(chunks),
        spaced=code[0] + " " + " ".join(chunks),
        lower_dashed=(code[0] + "-" + "-".join(chunks)).lower(),
    )
    assert normalize_code(text) == code


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "R",
        "RABCDEFGHIJKLMNOPQRS",  # one character short
        "RABCDEFGHIJKLMNOPQRSTU",  # one character long
        "XABCDEFGHIJKLMNOPQRST",  # wrong prefix
        "RABCDEFGHIJKLMNOPQRS0",  # 0 is not base32
        "RABCDEFGHIJKLMNOPQRS1",  # 1 is not base32
        "RABCDEFGHIJKLMNOPQRS8",
        "RABCDEFGHIJKLMNOPQRS_",
        "RABCDEFGHIJKLMNOPQRS=",
        "RABCDEFGHIJKLMNOPQRS/",
        "https://example.com/r/RABCDEFGHIJKLMNOPQRST",
    ],
)
def test_a_malformed_code_is_refused(text: str) -> None:
    assert normalize_code(text) is None


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=30))
def test_normalize_code_returns_either_nothing_or_a_canonical_code(text: str) -> None:
    result = normalize_code(text)
    if result is not None:
        assert result.startswith(CODE_PREFIX)
        assert len(result) == len(new_referral_code(fixed_bytes(bytes(CODE_BYTES))))
        assert set(result[1:]) <= set(BASE32_ALPHABET)
        assert normalize_code(result) == result


@settings(max_examples=100, deadline=None)
@given(
    raw=st.binary(min_size=CODE_BYTES, max_size=CODE_BYTES),
    separators=st.lists(st.sampled_from(["", "", " ", "-", "\t", " - "]), min_size=22, max_size=22),
    lowered=st.lists(st.booleans(), min_size=21, max_size=21),
)
def test_any_mix_of_case_spaces_and_hyphens_normalizes_to_the_same_code(
    raw: bytes, separators: list[str], lowered: list[bool]
) -> None:
    code = new_referral_code(fixed_bytes(raw))
    chars = [c.lower() if low else c for c, low in zip(code, lowered, strict=True)]
    typed = "".join(sep + c for sep, c in zip(separators, chars, strict=False)) + separators[-1]
    assert normalize_code(typed) == code


def test_a_path_style_base_gets_the_code_as_its_last_segment() -> None:
    code = "RABCDEFGHIJKLMNOPQRST"
    assert referral_link("https://example.com/r/", code) == f"https://example.com/r/{code}"
    assert referral_link("https://example.com/r", code) == f"https://example.com/r/{code}"
    assert urlsplit(referral_link("https://example.com/r/", code)).path.endswith("/" + code)


def test_a_query_style_base_gets_the_code_as_the_parameter_value() -> None:
    code = "RABCDEFGHIJKLMNOPQRST"
    link = referral_link("https://example.com/signup?ref=", code)
    assert link == f"https://example.com/signup?ref={code}"
    assert urlsplit(link).query == f"ref={code}"

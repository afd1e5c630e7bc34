"""Magic links to a referrer's page: signed, expiring, for one referrer only."""

from __future__ import annotations

import types

import pytest

from integrations.web.magic import MAX_TOKEN_CHARS, MagicLinks, PageLinks

KEY = b"a-page-key-of-at-least-32-characters!!"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """itsdangerous' clock, under the test's control (its own module reference only)."""
    now = types.SimpleNamespace(value=1_800_000_000.0)
    fake_time = types.SimpleNamespace(time=lambda: now.value)
    monkeypatch.setattr("itsdangerous.timed.time", fake_time)
    return now


def test_a_token_names_the_referrer_it_was_made_for(clock: types.SimpleNamespace) -> None:
    magic = MagicLinks(KEY, 3600)

    assert magic.referrer_of(magic.token_for("C1")) == "C1"
    assert magic.referrer_of(magic.token_for("C2")) == "C2"
    assert magic.token_for("C1") != magic.token_for("C2")


def test_a_token_is_refused_once_its_lifetime_is_over(clock: types.SimpleNamespace) -> None:
    magic = MagicLinks(KEY, 3600)
    token = magic.token_for("C1")

    clock.value += 3600
    assert magic.referrer_of(token) == "C1"
    clock.value += 2
    assert magic.referrer_of(token) is None


def test_a_tampered_token_is_refused_whichever_part_changed(clock: types.SimpleNamespace) -> None:
    magic = MagicLinks(KEY, 3600)
    token = magic.token_for("C1")

    for i in range(len(token)):
        changed = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        assert magic.referrer_of(changed) is None, f"position {i}"


def test_a_token_made_for_another_referrer_cannot_be_rewritten_to_name_someone_else(
    clock: types.SimpleNamespace,
) -> None:
    magic = MagicLinks(KEY, 3600)
    payload, _, rest = magic.token_for("C1").partition(".")
    other_payload = magic.token_for("C2").partition(".")[0]

    assert magic.referrer_of(f"{other_payload}.{rest}") is None
    assert magic.referrer_of(f"{payload}.{rest}") == "C1"


def test_a_token_signed_with_another_key_is_refused(clock: types.SimpleNamespace) -> None:
    other = MagicLinks(b"another-page-key-of-at-least-32-chars!!", 3600)

    assert MagicLinks(KEY, 3600).referrer_of(other.token_for("C1")) is None


@pytest.mark.parametrize("token", ["", "new", "a.b.c", "%%%", "x" * (MAX_TOKEN_CHARS + 1)])
def test_malformed_and_oversized_tokens_are_refused(
    clock: types.SimpleNamespace, token: str
) -> None:
    assert MagicLinks(KEY, 3600).referrer_of(token) is None


def test_the_form_token_is_bound_to_the_page_token_and_its_referrer(
    clock: types.SimpleNamespace,
) -> None:
    magic = MagicLinks(KEY, 3600)
    token_a, token_b = magic.token_for("A"), magic.token_for("B")
    csrf_a = magic.csrf_for(token_a, "A")

    assert magic.csrf_ok(token_a, "A", csrf_a)
    assert not magic.csrf_ok(token_b, "B", csrf_a)
    assert not magic.csrf_ok(token_a, "A", None)
    assert not magic.csrf_ok(token_a, "A", "")
    assert not magic.csrf_ok(token_a, "A", csrf_a[:-1] + ("0" if csrf_a[-1] != "0" else "1"))


def test_a_page_link_is_the_public_base_with_a_token_and_its_repr_shows_no_key(
    clock: types.SimpleNamespace,
) -> None:
    magic = MagicLinks(KEY, 3600)
    links = PageLinks(magic, "https://refer.example.com/")

    url = links("C1")

    assert url.startswith("https://refer.example.com/p/")
    assert magic.referrer_of(url.rsplit("/", 1)[1]) == "C1"
    assert KEY.decode() not in repr(links)

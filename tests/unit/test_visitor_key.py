"""The link visitors' hash key: from settings, or made once into an owner-only file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from config.settings import load_settings
from domain.errors import ConfigError
from integrations.web.keys import visitor_key


def test_a_configured_key_wins_over_the_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "visitor.key"
    assert visitor_key(SecretStr("x" * 40), key_file) == b"x" * 40
    assert not key_file.exists()


def test_without_a_configured_key_one_is_made_once_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "data" / "visitor.key"
    first = visitor_key(None, key_file)
    assert len(first) == 64
    assert visitor_key(None, key_file) == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_visitor_key_shorter_than_32_characters_is_refused() -> None:
    with pytest.raises(ConfigError, match="REFERRALS_VISITOR_KEY"):
        load_settings(visitor_key="too-short")


def test_the_visitor_key_never_prints() -> None:
    settings = load_settings(visitor_key="s" * 40)
    assert "s" * 40 not in repr(settings)
    assert "s" * 40 not in str(settings.model_dump())

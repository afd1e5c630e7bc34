"""A wrong setting, file or environment stops the start with one line that names it.

That line becomes the failed run's state message and the alert's text, so it must be
one line, name the REFERRALS_ variable or the file, say what is wrong, and never show
a password.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from config.program import load_program
from config.settings import load_settings
from domain.errors import ConfigError
from flows.bootstrap import build_app
from integrations.prefect_stack import free_port


def _start_error(**settings: object) -> str:
    with pytest.raises(ConfigError) as info:
        build_app(load_settings(**settings))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_an_inbox_path_that_is_a_file_is_named_as_not_a_folder(
    sqlite_url: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.write_text("not a folder", encoding="utf-8")

    message = _start_error(database_url=sqlite_url, inbox_dir=inbox)

    assert message == f"REFERRALS_INBOX_DIR ({inbox}) is not a folder: it is a file"


def test_an_inbox_that_cannot_be_made_is_named_with_the_reason(
    sqlite_url: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is needed", encoding="utf-8")

    message = _start_error(database_url=sqlite_url, inbox_dir=blocker / "inbox")

    assert message.startswith(f"REFERRALS_INBOX_DIR ({blocker / 'inbox'}) cannot be made: ")


def test_a_database_that_cannot_be_reached_is_named_without_its_password(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://referrals:s3cret-pw@127.0.0.1:{free_port()}/ledger"

    message = _start_error(database_url=url, inbox_dir=tmp_path)

    assert message.startswith("REFERRALS_DATABASE_URL (postgresql+psycopg://referrals:***@")
    assert "cannot be reached: " in message
    assert "s3cret-pw" not in message


@pytest.mark.parametrize("url", ["not a database url", "mysql://u:pw@host/x"])
def test_a_database_url_the_ledger_cannot_use_is_named(tmp_path: Path, url: str) -> None:
    message = _start_error(database_url=url, inbox_dir=tmp_path)

    assert message == (
        "invalid settings: REFERRALS_DATABASE_URL: only sqlite:// and "
        "postgresql+psycopg:// ledgers are supported"
    )


def test_a_sqlite_ledger_under_a_file_is_named_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file", encoding="utf-8")

    message = _start_error(
        database_url=f"sqlite:///{tmp_path}/data/ledger.db", inbox_dir=tmp_path / "inbox"
    )

    assert message.startswith("REFERRALS_DATABASE_URL (sqlite:///")
    assert "cannot create the database's folder" in message


def test_a_program_file_that_does_not_parse_is_one_line_naming_the_file_and_the_place(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "program.yaml"
    rules.write_text("name: [unclosed\ncurrency: EUR\n", encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_program(rules)

    assert str(info.value) == (
        f"{rules}: not valid YAML: line 2, column 9: expected ',' or ']', but got ':'"
    )


def test_a_program_file_with_wrong_fields_lists_them_on_one_line(tmp_path: Path) -> None:
    rules = tmp_path / "program.yaml"
    rules.write_text("currency: 12\nrewards: nope\n", encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_program(rules)

    message = str(info.value)
    assert message.startswith(f"{rules}: invalid program rules: ")
    assert "\n" not in message
    assert "; " in message  # more than one field, one line


def test_wrong_settings_are_named_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(batch_size="many", registration_contact_key="too-short")

    message = str(info.value)
    assert "\n" not in message
    assert "REFERRALS_BATCH_SIZE: " in message
    assert "REFERRALS_REGISTRATION_CONTACT_KEY: " in message

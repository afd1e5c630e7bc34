"""The file source's bounds: each refuses its record with its named reason, and the
record alone; the field lengths are the ledger's column lengths."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String

from config.settings import load_settings
from domain.errors import ConfigError
from domain.inputs import InputBounds, excerpt, is_email, json_depth_exceeds, plain_digits
from domain.models import Rejected
from integrations.ledger.tables import (
    T_ACCOUNTS,
    T_CONTACTS,
    T_PARTNER_REGISTRATIONS,
    T_SOURCE_EVENTS,
)
from integrations.sources import columnar, files
from integrations.sources.files import FIELD_CHARS, FileSource
from tests.hostile_inputs import CLASSES, build, write

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
HEADER = "event_id,type,occurred_at,contact_id,amount,currency,score\n"


def _source(folder: Path, bounds: InputBounds | None = None) -> FileSource:
    return FileSource(folder, bounds, clock=lambda: NOW)


def _refused(folder: Path, bounds: InputBounds | None = None) -> dict[str, Rejected]:
    batch = _source(folder, bounds).fetch(None)
    assert batch.records_in == len(batch.events) + len(batch.rejected) + batch.reference_only
    return {r.record: r for r in batch.rejected}


def _length(column: object) -> int:
    type_ = getattr(column, "type", None)
    assert isinstance(type_, String)
    assert type_.length is not None
    return type_.length


@pytest.mark.parametrize(
    ("name", "fmt"),
    [(name, fmt) for name, (_, formats) in CLASSES.items() for fmt in formats],
)
def test_each_malformation_class_is_refused_with_its_named_reason_or_stored_when_valid(
    tmp_path: Path, name: str, fmt: str
) -> None:
    case = build(name, fmt, 1, NOW)
    (record,) = write(tmp_path, [case])

    batch = _source(tmp_path).fetch(None)

    assert batch.records_in == 1
    if case.expect is None:
        assert batch.rejected == []
    else:
        (rejected,) = batch.rejected
        assert rejected.record == record
        assert rejected.reason.startswith(case.expect)


def test_field_lengths_are_the_lengths_of_the_ledger_columns_they_are_stored_in() -> None:
    events = T_SOURCE_EVENTS.c
    for field in ("event_id", "type", "account_id", "contact_id", "currency", "priority"):
        assert FIELD_CHARS["events"][field] == _length(events[field])
    for field in ("milestone", "referral_code", "deal_id", "ticket_id", "referee_email_domain"):
        assert FIELD_CHARS["events"][field] == _length(events[field])
    for field in ("contact_id", "account_id", "name", "email", "referrer_type"):
        assert FIELD_CHARS["contacts"][field] == _length(T_CONTACTS.c[field])
    for field in ("stripe_customer_id", "stripe_account_id"):
        assert FIELD_CHARS["contacts"][field] == _length(T_CONTACTS.c[field])
    for field in ("account_id", "name", "domain"):
        assert FIELD_CHARS["accounts"][field] == _length(T_ACCOUNTS.c[field])
    # An NPS answer's event id is "nps-" and its response id.
    assert FIELD_CHARS["nps"]["response_id"] + len("nps-") == _length(events["event_id"])
    registrations = T_PARTNER_REGISTRATIONS.c
    assert FIELD_CHARS["registrations"]["partner_id"] == _length(registrations["partner_id"])
    assert FIELD_CHARS["registrations"]["domain"] == _length(registrations["domain"])


def test_a_value_as_long_as_its_column_is_stored_and_one_character_more_is_refused(
    tmp_path: Path,
) -> None:
    ok, long = "E" * 256, "F" * 257
    (tmp_path / "events.csv").write_text(
        HEADER
        + f"{ok},nps_response,2026-10-01T10:00:00Z,C1,,,9\n"
        + f"{long},nps_response,2026-10-01T10:00:00Z,C1,,,9\n"
    )

    batch = _source(tmp_path).fetch(None)

    assert [e.event_id for e in batch.events] == [ok]
    (refused,) = batch.rejected
    assert (refused.record, refused.field) == ("events.csv:3", "event_id")
    assert refused.reason == "field_too_long: 257 characters, at most 256"


def test_the_largest_amount_accepted_is_a_setting_and_one_minor_unit_more_is_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "events.csv").write_text(
        HEADER
        + "E1,deal_won,2026-10-01T10:00:00Z,C1,100.00,EUR,\n"
        + "E2,deal_won,2026-10-01T10:00:00Z,C1,100.01,EUR,\n"
    )

    refused = _refused(tmp_path, InputBounds(max_amount_minor=10_000))

    assert list(refused) == ["events.csv:3"]
    assert refused["events.csv:3"].reason.startswith("amount_too_large: ")


def test_dates_from_the_earliest_date_to_a_day_past_the_reading_are_accepted(
    tmp_path: Path,
) -> None:
    latest = NOW + timedelta(days=1)
    (tmp_path / "events.csv").write_text(
        HEADER
        + "E1,nps_response,2000-01-01T00:00:00Z,C1,,,9\n"
        + f"E2,nps_response,{latest.isoformat()},C1,,,9\n"
        + "E3,nps_response,1999-12-31T23:59:59Z,C1,,,9\n"
        + f"E4,nps_response,{(latest + timedelta(seconds=1)).isoformat()},C1,,,9\n"
    )

    refused = _refused(tmp_path)

    assert sorted(refused) == ["events.csv:4", "events.csv:5"]
    assert all(r.reason.startswith("date_out_of_range: ") for r in refused.values())


def test_an_account_customer_since_outside_the_window_is_refused(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text(
        "account_id,name,customer_since\nA1,Acme,2019-05-01\nA2,Old,0001-01-01\nA3,New,2099-01-01\n"
    )

    refused = _refused(tmp_path, InputBounds(earliest_date=date(2010, 1, 1)))

    assert sorted(refused) == ["accounts.csv:3", "accounts.csv:4"]
    assert all(r.field == "customer_since" for r in refused.values())


def test_a_quoted_csv_field_over_the_record_bound_is_refused_and_the_rows_after_it_are_read(
    tmp_path: Path,
) -> None:
    # Each line is short; the quoted field spans them and grows past the bound.
    lines = "\n".join("y" * 900 for _ in range(3))
    (tmp_path / "events.csv").write_text(
        HEADER
        + f'E1,nps_response,2026-10-01T10:00:00Z,"{lines}",,,9\n'
        + "E2,nps_response,2026-10-01T10:00:00Z,C1,,,9\n"
    )

    batch = _source(tmp_path, InputBounds(max_record_chars=2_000)).fetch(None)

    assert [e.event_id for e in batch.events] == ["E2"]
    assert any(r.reason.startswith("csv_field_too_large: ") for r in batch.rejected)
    # The rest of the broken record is read as records of its own: each is counted.
    assert batch.records_in == len(batch.events) + len(batch.rejected)


def test_a_csv_header_too_long_to_read_refuses_the_file_and_the_drop_goes_on(
    tmp_path: Path,
) -> None:
    (tmp_path / "events_a.csv").write_text("x" * 5_000 + "\nE1\n")
    (tmp_path / "events_b.csv").write_text(HEADER + "E2,nps_response,2026-10-01T10:00:00Z,C1,,,9\n")

    batch = _source(tmp_path, InputBounds(max_record_chars=2_000)).fetch(None)

    assert [e.event_id for e in batch.events] == ["E2"]
    (refused,) = batch.rejected
    assert refused.record == "events_a.csv"
    assert refused.reason.startswith("file_unreadable: ")


def test_a_registration_with_a_control_character_is_refused_by_field(tmp_path: Path) -> None:
    (tmp_path / "registrations.csv").write_text(
        "partner_id,domain,contact,evidence,registered_at\n"
        "P\x001,acme.com,C9,a discovery call held,2026-10-01T10:00:00Z\n"
        "P1,acme.com,C9,a discovery call held\twith notes,1990-10-01T10:00:00Z\n"
    )

    read = _source(tmp_path).fetch_registrations(None)

    assert read.claims == []
    assert [(r.record, r.field, r.reason.split(":")[0]) for r in read.rejected] == [
        ("registrations.csv:2", "partner_id", "control_character"),
        ("registrations.csv:3", "registered_at", "date_out_of_range"),
    ]


def test_a_refused_record_keeps_an_escaped_capped_excerpt_of_itself(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(
        HEADER
        + "E1,nps_response,2026-10-01T10:00:00Z,C\x001,,,9\n"
        + "E2,nps_response,2026-10-01T10:00:00Z,"
        + "z" * 5_000
        + ",,,9\n"
    )

    refused = _refused(tmp_path)

    # A NUL cannot reach a PostgreSQL text column, even in the excerpt.
    assert refused["events.csv:2"].raw == "E1,nps_response,2026-10-01T10:00:00Z,C\\x001,,,9"
    assert refused["events.csv:3"].reason.startswith("field_too_long: ")
    assert len(refused["events.csv:3"].raw) == 1_000


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("jane@example.com", True),
        ("jane.doe+ref@mail.example.co.uk", True),
        ("a@b@c.com", False),
        ("root@localhost", False),
        ("jane doe@example.com", False),
        ("@example.com", False),
        ("jane@example..com", False),
        ("jane@.com", False),
        ("jane@example.com\x00", False),
    ],
)
def test_an_email_has_one_at_a_local_part_and_a_dotted_domain_and_no_spaces(
    text: str, valid: bool
) -> None:
    assert is_email(text) is valid


@pytest.mark.parametrize(
    ("text", "digits"),
    [("9", True), ("10", True), ("1_0", False), ("\u0669", False), ("+9", False), (" 9", False)],
)
def test_only_plain_ascii_digits_are_a_whole_number(text: str, digits: bool) -> None:
    assert plain_digits(text) is digits


def test_json_nesting_is_measured_without_parsing_and_brackets_in_strings_do_not_count() -> None:
    assert json_depth_exceeds("[" * 100_000 + "]" * 100_000, 8)
    assert not json_depth_exceeds('{"a": "' + "[" * 50 + '"}', 8)
    assert not json_depth_exceeds('{"a": "\\"[[[[[[[[[[", "b": [[1]]}', 8)
    assert json_depth_exceeds('{"a": ' + "[" * 9 + "]" * 9 + "}", 8)


def test_an_excerpt_escapes_nul_and_bytes_that_are_not_utf8_and_is_capped() -> None:
    assert excerpt("a\x00b\udce9c") == "a\\x00b\\udce9c"
    assert len(excerpt("x" * 5_000)) == 1_000


def test_the_bounds_are_read_from_settings() -> None:
    settings = load_settings(
        input_max_record_chars=4_096,
        input_max_json_depth=3,
        input_max_amount_minor=500,
        input_earliest_date="2010-01-01",
        input_max_future_days=0,
    )

    assert settings.input_bounds == InputBounds(
        max_record_chars=4_096,
        max_json_depth=3,
        max_amount_minor=500,
        earliest_date=date(2010, 1, 1),
        max_future=timedelta(0),
    )
    with pytest.raises(ConfigError, match="REFERRALS_INPUT_MAX_AMOUNT_MINOR"):
        load_settings(input_max_amount_minor=10**16)


def test_an_exception_no_check_foresaw_refuses_its_record_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_event = files._event

    def fragile(record: str, fields: Any, bounds: Any, window: Any) -> Any:
        if fields["event_id"] == "E2":
            raise RecursionError("maximum recursion depth exceeded")
        return real_event(record, fields, bounds, window)

    monkeypatch.setattr(files, "_event", fragile)
    # Times written with an offset: rows the block checks leave to the row-by-row
    # checks, where _event runs.
    (tmp_path / "events.csv").write_text(
        HEADER + "".join(f"E{i},nps_response,2026-10-01T10:00:00+00:00,C1,,,9\n" for i in (1, 2, 3))
    )

    batch = _source(tmp_path).fetch(None)

    assert [e.event_id for e in batch.events] == ["E1", "E3"]
    (refused,) = batch.rejected
    assert (refused.record, refused.reason) == ("events.csv:3", "unexpected_error: RecursionError")


def test_a_block_check_failing_unforeseen_leaves_its_rows_to_the_row_by_row_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any) -> Any:
        raise MemoryError("a block check that broke")

    monkeypatch.setattr(columnar, "split", broken)
    (tmp_path / "events.csv").write_text(
        HEADER
        + "".join(f"E{i},nps_response,2026-10-01T10:00:00Z,C1,,,{i}\n" for i in (1, 2, 3))
        + "E4,nps_response,2026-10-01T10:00:00Z,C1,,,11\n"
    )

    batch = _source(tmp_path).fetch(None)

    # Every row still read, and refused only for what it holds.
    assert [e.event_id for e in batch.events] == ["E1", "E2", "E3"]
    (refused,) = batch.rejected
    assert (refused.record, refused.field) == ("events.csv:5", "score")


def test_a_reason_quoting_the_refused_value_masks_an_address_in_it(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text(HEADER + "E1,nps_response,jane@acme.example,C1,,,9\n")

    (refused,) = _refused(tmp_path).values()

    assert refused.reason == "'<email>' is not an ISO 8601 timestamp"

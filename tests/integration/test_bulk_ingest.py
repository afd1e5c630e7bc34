"""A file drop read in blocks is written in bulk (executemany on SQLite, COPY on
PostgreSQL): the ledger must end up holding exactly what row-at-a-time writes stored,
on both databases, across a second drop that changes contacts and repeats events."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import Engine, text

from domain.models import IngestReport
from domain.ports import SourceBatch
from integrations.ledger.bulk import AccountColumns, ContactColumns, EventColumns
from integrations.ledger.engine import make_engine
from integrations.ledger.sql import SqlLedger
from integrations.sources import files
from integrations.sources.files import FileSource
from integrations.sources.sample import generate
from tasks.ingest import ingest_sources

NOW = datetime(2026, 12, 6, 22, 0, 0, 123456, tzinfo=UTC)
TABLES = {
    "accounts": "account_id",
    "contacts": "contact_id",
    "source_events": "id",
    "quarantine": "id",
    "payout_destination_changes": "id",
    "source_cursors": "source",
}
# Ids drawn from a sequence are the database's own business (PostgreSQL draws one for
# a row it then finds already stored); everything else must be the same.
DRAWN = {"id"}


def _drops(root: Path) -> tuple[Path, Path]:
    """A sample drop, and a second one: contacts with other payout destinations and
    some events of the first again."""
    first = root / "first"
    generate(first, datetime(2026, 12, 6, 21, tzinfo=UTC), 60, 7)
    second = root / "second"
    shutil.copytree(first, second)
    contacts = (second / "contacts.csv").read_text().replace("cus_demo", "cus_moved")
    (second / "contacts.csv").write_text(contacts)
    events = (first / "events.csv").read_text().splitlines(keepends=True)
    (second / "events.csv").write_text(
        "".join(events) + "E9999001,signup,2026-11-01T10:00:00Z,A0001,,,,,,,,,,,\n"
    )
    return first, second


def _ingest(engine: Engine, inbox: Path, page_records: int) -> list[Any]:
    source = FileSource(inbox, clock=lambda: NOW)
    return ingest_sources.fn([source], SqlLedger(engine), NOW, page_records)


def _rows(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as conn:
        return {
            table: [
                {k: _as_sqlite_text(v) for k, v in row.items() if k not in DRAWN}
                for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY {key}")).mappings()
            ]
            for table, key in TABLES.items()
        }


def _as_sqlite_text(value: Any) -> Any:
    """A value as SQLite holds it (PostgreSQL's driver gives dates and times as such)."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


def _stored(url: str, inbox: Path, second: Path, page_records: int) -> tuple[Any, ...]:
    engine = make_engine(url)
    try:
        reports = [_ingest(engine, inbox, page_records)]
        # The second drop in the same inbox: changed contacts, a grown events file.
        for path in second.iterdir():
            shutil.copy(path, inbox / path.name)
        reports.append(_ingest(engine, inbox, page_records))
        return reports, _rows(engine)
    finally:
        engine.dispose()


@pytest.fixture
def drops(tmp_path: Path) -> tuple[Path, Path]:
    return _drops(tmp_path)


def _fresh_inbox(tmp_path: Path, first: Path, name: str) -> Path:
    inbox = tmp_path / name
    shutil.copytree(first, inbox)
    return inbox


def test_bulk_writes_store_what_row_at_a_time_writes_stored(
    tmp_path: Path,
    drops: tuple[Path, Path],
    ledger_url: str,
    sqlite_template: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = drops
    bulk = _stored(ledger_url, _fresh_inbox(tmp_path, first, "bulk"), second, 150)

    # The same drops read row by row (no blocks), so written a row at a time.
    real_scan = files._scan
    monkeypatch.setattr(files, "_scan", lambda *args: (real_scan(*args)[0], False))
    shutil.copy(sqlite_template, tmp_path / "rows.db")
    one_by_one = _stored(
        f"sqlite:///{tmp_path / 'rows.db'}", _fresh_inbox(tmp_path, first, "rows"), second, 150
    )

    bulk_reports, bulk_rows = bulk
    reports, rows = one_by_one
    assert bulk_reports == reports
    assert reports[1][0].new_events == 1  # the second drop's one new event
    assert len(rows["payout_destination_changes"]) > 0
    for table in TABLES:
        assert bulk_rows[table] == rows[table], table


def test_a_plain_drop_reaches_the_store_as_columns(
    drops: tuple[Path, Path], sqlite_ledger: SqlLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = drops
    batches: list[SourceBatch] = []
    record_batch = sqlite_ledger.sources.record_batch

    def spy(batch: SourceBatch, now: datetime) -> IngestReport:
        batches.append(batch)
        return record_batch(batch, now)

    monkeypatch.setattr(sqlite_ledger.sources, "record_batch", spy)

    ingest_sources.fn([FileSource(first, clock=lambda: NOW)], sqlite_ledger, NOW, 500)

    # No row of the plain drop became an object on its way to the ledger.
    assert any(isinstance(b.accounts, AccountColumns) for b in batches)
    assert any(isinstance(b.contacts, ContactColumns) for b in batches)
    assert all(isinstance(b.events, EventColumns) for b in batches if len(b.events))


def test_bulk_writes_keep_nulls_apart_from_empty_texts_and_minus_ones(engine: Engine) -> None:
    # SQLite binds each null as a value its column holds nowhere else ('' or -1): a
    # column that does hold that value must keep it, and its nulls, as they were.
    contacts = pl.DataFrame(
        {
            "contact_id": ["C1", "C2", "C3"],
            "account_id": ["", None, "A1"],
            "name": ["", "Ann", ""],
            "email": [None, "ann@example.com", None],
            "referrer_type": ["customer"] * 3,
            "opted_out": [False, True, False],
            "stripe_customer_id": [None] * 3,
            "stripe_account_id": [None] * 3,
        },
        schema=ContactColumns.schema,
    )
    events = pl.DataFrame(
        {
            "event_id": ["E1", "E2", "E3"],
            "type": ["signup", "nps_response", "ticket_opened"],
            "occurred_at": [NOW.replace(tzinfo=None)] * 3,
            "account_id": ["A1", None, "A1"],
            "contact_id": [None, "C2", "C1"],
            "amount_minor": [None, -1, 0],
            "currency": [None, "EUR", "EUR"],
            "score": [-1, None, 7],
            "priority": ["", None, "high"],
        },
        schema_overrides=EventColumns.schema,
    ).select(
        [
            pl.col(c)
            if c
            in (
                "event_id",
                "type",
                "occurred_at",
                "account_id",
                "contact_id",
                "amount_minor",
                "currency",
                "score",
                "priority",
            )
            else pl.lit(None, t).alias(c)
            for c, t in EventColumns.schema.items()
        ]
    )
    batch = SourceBatch(
        source="files",
        contacts=ContactColumns(contacts),
        events=EventColumns(events, "files"),
        records_in=6,
        reference_only=3,
    )

    SqlLedger(engine).sources.record_batch(batch, NOW)

    with engine.connect() as conn:
        stored_contacts = conn.execute(
            text("SELECT contact_id, account_id, name, email FROM contacts ORDER BY contact_id")
        ).all()
        stored_events = conn.execute(
            text(
                "SELECT event_id, account_id, contact_id, amount_minor, currency, score, "
                "priority, milestone FROM source_events ORDER BY event_id"
            )
        ).all()
    assert [tuple(r) for r in stored_contacts] == [
        ("C1", "", "", None),
        ("C2", None, "Ann", "ann@example.com"),
        ("C3", "A1", "", None),
    ]
    assert [tuple(r) for r in stored_events] == [
        ("E1", "A1", None, None, None, -1, "", None),
        ("E2", None, "C2", -1, "EUR", None, None, None),
        ("E3", "A1", "C1", 0, "EUR", 7, "high", None),
    ]

"""A file drop is read and stored a page at a time: bounded memory, every record
accounted for, and the cursor moved only once the whole drop is stored."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from domain.ports import PagedEventSource, SourceBatch
from integrations.ledger.sql import SqlLedger
from integrations.sources.files import FileSource
from tasks.ingest import ingest_sources
from tests.conftest import NOW

EVENTS_HEADER = "event_id,type,occurred_at,account_id,contact_id,score\n"


def _drop(folder: Path, events: int) -> None:
    (folder / "accounts.csv").write_text(
        "account_id,name,domain,customer_since\nA1,Acme,acme.example,2024-01-01\n"
    )
    (folder / "contacts.csv").write_text(
        "contact_id,account_id,name,email,referrer_type\n"
        "C1,A1,Ana Ruiz,ana@acme.example,customer\n"
        "C2,A1,Ben Ode,ben@acme.example,customer\n"
    )
    rows = [f"E{i},nps_response,2026-10-01T10:00:00Z,A1,C1,10\n" for i in range(events)]
    rows.insert(3, "EBAD,nps_response,not-a-date,A1,C1,9\n")
    (folder / "events.csv").write_text(EVENTS_HEADER + "".join(rows))


def test_the_file_source_reads_a_drop_in_pages_that_add_up_to_one_read(tmp_path: Path) -> None:
    _drop(tmp_path, events=7)
    source = FileSource(tmp_path)
    assert isinstance(source, PagedEventSource)

    pages = list(source.pages(None, page_records=3))
    whole = source.fetch(None)

    # 3 reference rows + 8 event rows = 11 records: pages of 3, 3, 3 and the last 2.
    assert [p.records_in for p in pages] == [3, 3, 3, 2]
    for page in pages:
        assert page.records_in == len(page.events) + len(page.rejected) + page.reference_only
    assert [p.cursor is not None for p in pages] == [False, False, False, True]
    assert pages[-1].cursor == whole.cursor
    assert [e.event_id for p in pages for e in p.events] == [e.event_id for e in whole.events]
    assert [r.record for p in pages for r in p.rejected] == ["events.csv:5"]
    assert sum(p.reference_only for p in pages) == whole.reference_only == 3


def test_a_drop_stored_in_pages_is_stored_whole_and_counted_as_one_read(
    sqlite_ledger: SqlLedger, tmp_path: Path
) -> None:
    _drop(tmp_path, events=25)
    source = FileSource(tmp_path)

    (report,) = ingest_sources.fn([source], sqlite_ledger, NOW, page_records=4)
    (again,) = ingest_sources.fn([source], sqlite_ledger, NOW, page_records=4)

    assert (report.records_in, report.new_events, report.quarantined) == (29, 25, 1)
    assert (report.reference_rows, report.already_seen) == (3, 0)
    assert report.balanced
    assert sqlite_ledger.metrics.summary()["events"] == 25
    assert again.records_in == 0  # the cursor moved with the last page


class _CutShort:
    """The file source, its read failing after ``pages`` pages (a crash, a kill)."""

    name = "files"

    def __init__(self, inner: FileSource, pages: int) -> None:
        self.inner = inner
        self.left = pages

    def fetch(self, cursor: str | None) -> SourceBatch:
        raise AssertionError("a paged source is read by pages")

    def pages(self, cursor: str | None, page_records: int) -> Iterator[SourceBatch]:
        for page in self.inner.pages(cursor, page_records):
            if self.left == 0:
                raise OSError("the worker went away")
            self.left -= 1
            yield page


def test_a_read_cut_short_is_read_again_and_loses_nothing_nor_stores_anything_twice(
    sqlite_ledger: SqlLedger, tmp_path: Path
) -> None:
    _drop(tmp_path, events=10)

    with pytest.raises(OSError, match="went away"):
        ingest_sources.fn([_CutShort(FileSource(tmp_path), pages=2)], sqlite_ledger, NOW, 5)
    stored_before = sqlite_ledger.metrics.summary()["events"]
    assert sqlite_ledger.sources.cursor("files") is None  # the cursor did not move
    (report,) = ingest_sources.fn([FileSource(tmp_path)], sqlite_ledger, NOW, page_records=5)

    # Pages 1 and 2 (10 records: 3 reference rows, 6 events and the bad row) were
    # stored before the cut.
    assert stored_before == 6
    assert (report.records_in, report.new_events, report.already_seen) == (14, 4, 6)
    assert report.quarantined == 1
    assert report.balanced
    assert sqlite_ledger.metrics.summary()["events"] == 10
    assert sqlite_ledger.sources.cursor("files") is not None


def test_an_event_id_repeated_pages_apart_is_refused_naming_its_first_line(
    tmp_path: Path,
) -> None:
    rows = [f"E{i},nps_response,2026-10-01T10:00:00Z,A1,C1,10\n" for i in range(6)]
    rows.append("E1,nps_response,2026-10-02T10:00:00Z,A1,C1,9\n")
    (tmp_path / "events.csv").write_text(EVENTS_HEADER + "".join(rows))

    pages = list(FileSource(tmp_path).pages(None, page_records=2))

    (refused,) = [r for p in pages for r in p.rejected]
    assert (refused.record, refused.field) == ("events.csv:8", "event_id")
    assert refused.reason == "duplicate of events.csv:3 in this drop"


def test_a_jsonl_record_holding_a_line_separator_character_stays_one_record(
    tmp_path: Path,
) -> None:
    # U+2028 is valid raw inside a JSON string; str.splitlines() used to cut the line.
    lines = [
        '{"event_id": "E1", "type": "usage_milestone", "occurred_at": '
        '"2026-10-01T10:00:00Z", "account_id": "A1", "contact_id": "C1", '
        '"milestone": "1000 seats\u2028reached"}',
        '{"event_id": "E2", "type": "nps_response", "occurred_at": '
        '"2026-10-01T11:00:00Z", "account_id": "A1", "contact_id": "C1", "score": 9}',
    ]
    (tmp_path / "events.jsonl").write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())

    batch = FileSource(tmp_path).fetch(None)

    assert batch.records_in == 2
    assert [e.event_id for e in batch.events] == ["E1", "E2"]
    assert [r.record for r in batch.rejected] == []


def test_a_page_the_database_fails_to_store_stops_the_read_ahead_and_moves_no_cursor(
    sqlite_ledger: SqlLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _drop(tmp_path, events=30)
    stored: list[int] = []
    record_batch = sqlite_ledger.sources.record_batch

    def fails_second(batch: SourceBatch, now: Any) -> Any:
        if stored:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        stored.append(batch.records_in)
        return record_batch(batch, now)

    monkeypatch.setattr(sqlite_ledger.sources, "record_batch", fails_second)

    with pytest.raises(OperationalError):
        ingest_sources.fn([FileSource(tmp_path)], sqlite_ledger, NOW, page_records=5)

    # The page read ahead was dropped with the reader, nothing stored past the failure.
    assert stored == [5]
    assert sqlite_ledger.sources.cursor("files") is None
    assert not [t for t in threading.enumerate() if t.name == "ingest-read-ahead"]

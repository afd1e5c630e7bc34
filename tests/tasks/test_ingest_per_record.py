"""A page the ledger refuses is stored row by row: only the rows it cannot hold are
quarantined, under the name of the line they were read from, and the counts add up."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from domain.models import EventType, IngestReport, Rejected, SourceEvent
from domain.money import Money
from domain.ports import SourceBatch
from integrations.ledger.sql import SqlLedger
from tasks.ingest import store_batch
from tests.moments_seed import undetected_events


def _event(event_id: str, now: datetime, **fields: object) -> SourceEvent:
    values: dict[str, object] = {"account_id": "A1", "contact_id": "C1", **fields}
    return SourceEvent(
        source="files",
        event_id=event_id,
        type=EventType.DEAL_WON,
        occurred_at=now,
        **values,  # type: ignore[arg-type]
    )


def _page(now: datetime, *events: SourceEvent, cursor: str | None = "done") -> SourceBatch:
    return SourceBatch(
        source="files",
        events=events,
        rejected=[Rejected("files", "events.csv:9", "type", "unknown event type")],
        records_in=len(events) + 1,
        cursor=cursor,
        origins={f"event:{e.event_id}": f"events.csv:{i + 2}" for i, e in enumerate(events)},
    )


def test_an_amount_no_integer_column_holds_is_quarantined_alone_and_the_page_is_stored(
    ledger: SqlLedger, now: datetime
) -> None:
    # 10**30 minor units: past SQLite's and PostgreSQL's 64-bit integers alike. The
    # file source refuses it long before (amount_too_large); here it reaches the
    # ledger as a source without that check would send it.
    events = [_event(f"e{i}", now) for i in range(7)]
    events[4] = _event("e4", now, amount=Money(10**30, "EUR"))

    report = store_batch(ledger, _page(now, *events), now)

    assert report == IngestReport("files", 8, 6, 0, 2, 0)
    stored = {e.event_id for _, e in undetected_events(ledger.engine, 0, 100)}
    assert stored == {"e0", "e1", "e2", "e3", "e5", "e6"}
    reasons = {q["record"]: q["reason"] for q in ledger.sources.quarantined()}
    # Named by the line the source read it from; the cause by its class only.
    assert reasons["events.csv:6"].startswith("not_storable: the ledger refused it (")
    assert reasons["events.csv:9"] == "unknown event type"
    assert ledger.sources.cursor("files") == "done"


@pytest.mark.postgres
def test_on_postgresql_a_nul_byte_or_an_overlong_value_loses_only_its_own_row(
    ledger: SqlLedger, now: datetime
) -> None:
    if ledger.engine.dialect.name != "postgresql":
        pytest.skip("SQLite stores NUL bytes and ignores VARCHAR lengths")
    events = [
        _event("ok-1", now),
        _event("nul", now, contact_id="C\x001"),
        _event("x" * 300, now),
        _event("ok-2", now),
    ]

    report = store_batch(ledger, _page(now, *events), now)

    assert (report.records_in, report.new_events, report.quarantined) == (5, 2, 3)
    assert report.balanced
    stored = {e.event_id for _, e in undetected_events(ledger.engine, 0, 100)}
    assert stored == {"ok-1", "ok-2"}
    reasons = {q["record"]: q["reason"] for q in ledger.sources.quarantined()}
    assert reasons["events.csv:3"].startswith("not_storable: the ledger refused it (")
    assert reasons["events.csv:4"].startswith("not_storable: the ledger refused it (")


def test_a_page_read_again_after_a_partial_store_counts_its_stored_rows_as_seen(
    ledger: SqlLedger, now: datetime
) -> None:
    events = [_event("a", now), _event("b", now, amount=Money(10**30, "EUR"))]
    store_batch(ledger, _page(now, *events, cursor=None), now)

    again = store_batch(ledger, _page(now, *events), now)

    assert (again.new_events, again.already_seen, again.quarantined) == (0, 1, 2)
    assert again.balanced


@pytest.mark.parametrize(
    "failure",
    [
        OperationalError("INSERT", {}, ConnectionError("server closed the connection")),
        ProgrammingError("INSERT", {}, Exception('relation "source_events" does not exist')),
    ],
)
def test_the_database_failing_fails_the_ingest_instead_of_quarantining_every_row(
    ledger: SqlLedger, now: datetime, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    def failing(*_args: object) -> IngestReport:
        raise failure

    monkeypatch.setattr(ledger.sources, "record_batch", failing)

    with pytest.raises(type(failure)):
        store_batch(ledger, _page(now, _event("a", now)), now)

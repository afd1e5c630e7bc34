"""Reading the event sources into the ledger."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from sqlalchemy.exc import (
    DisconnectionError,
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from domain.errors import PermanentIntegrationError, ReferralError
from domain.inputs import Refusal, excerpt, refusal
from domain.models import Account, Contact, IngestReport, Rejected, SourceEvent
from domain.ports import EventSource, PagedEventSource, SourceBatch, origin_key
from domain.quarantine import split_conflicts
from integrations.ledger.bulk import Columns
from integrations.ledger.sql import SqlLedger
from tasks._support import run_logger

# A page of a file drop: 10,000 rows are a few tens of MB as Python objects, and a
# transaction per page costs little next to storing them.
PAGE_RECORDS = 10_000


class UnbalancedIngest(ReferralError):
    """A source's counts do not add up: records would be lost silently."""


def without_conflicts(batch: SourceBatch) -> SourceBatch:
    """``batch`` with every row of a contact or account whose rows disagree moved to its
    rejects (reason ``conflicting_rows``), and rows said twice kept once.

    A second row for one contact in one read (another email, referrer type or payout
    destination) is refused with the first, not stored over it: the last row never
    silently wins. Counts still add up: a refused row leaves the reference rows for the
    rejects. Within a page: a paged drop's rows for one contact on two pages are
    stored in turn, and a destination change between them is recorded and flagged as
    any change between drops is.
    """
    # Rows held in columns with distinct ids need no split (nor to become objects).
    accounts_distinct, contacts_distinct = _distinct(batch.accounts), _distinct(batch.contacts)
    if accounts_distinct and contacts_distinct:
        return batch
    split = split_conflicts(
        batch.source,
        () if accounts_distinct else batch.accounts,
        () if contacts_distinct else batch.contacts,
    )
    if not split.rejected and not split.duplicates:
        return batch
    return replace(
        batch,
        accounts=batch.accounts if accounts_distinct else split.accounts,
        contacts=batch.contacts if contacts_distinct else split.contacts,
        rejected=(*batch.rejected, *split.rejected),
        reference_only=batch.reference_only - len(split.rejected),
    )


def _distinct(rows: Sequence[Account] | Sequence[Contact]) -> bool:
    """No rows, or rows held in columns whose ids are all different: none can conflict
    or repeat (checked on the columns, without making each row an object)."""
    return not rows or (isinstance(rows, Columns) and rows.unique_keys())


# The database itself failing (gone, locked, out of connections) or refusing the
# statement whatever its rows (a table missing, a migration not run) is no record's
# fault: the task fails and is retried, nothing is quarantined for it.
_PASSING = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
    ConnectionError,
    ProgrammingError,
    InternalError,
)

Row = Account | Contact | SourceEvent


def store_batch(ledger: SqlLedger, batch: SourceBatch, now: datetime) -> IngestReport:
    """Store ``batch``; when the ledger refuses it, store every row it will take and
    quarantine the ones it will not, so one bad row never loses its page.

    The sources check each row against the ledger's bounds first, so a refusal here is
    what no check foresaw (a value PostgreSQL will not hold, an integer SQLite cannot
    bind). The refused batch is split in halves, each stored in a transaction of its
    own, down to the single rows that fail: those become rejects named by where the
    source read them (``events.csv:17``) with reason ``not_storable``. The batch's own
    rejects and its cursor are stored last, so the cursor moves only once every row is
    stored or quarantined (a run cut short re-reads the page; stored rows are then
    already seen).

    Raises:
        Exception: the database failing for a passing reason (connection, lock,
            timeout) is raised as it is, for the task to retry.
    """
    try:
        return ledger.sources.record_batch(batch, now)
    except _PASSING:
        raise
    except Exception as exc:
        # The class only: the database's message quotes the rows.
        run_logger().warning(
            "source %s: the ledger refused a page (%s); storing it row by row",
            batch.source,
            type(exc).__name__,
        )
    rows: list[Row] = [*batch.accounts, *batch.contacts, *batch.events]
    reports: list[IngestReport] = []
    refused: list[Rejected] = []
    _store_rows(ledger, batch, rows, now, reports, refused)
    # Records the source counted with the reference rows beyond its accounts and
    # contacts (an object that held no fact), kept in the last report.
    extra = batch.reference_only - len(batch.accounts) - len(batch.contacts)
    rejects = [*batch.rejected, *refused]
    last = SourceBatch(
        source=batch.source,
        rejected=rejects,
        records_in=len(rejects) + extra,
        reference_only=extra,
        cursor=batch.cursor,
    )
    try:
        reports.append(ledger.sources.record_batch(last, now))
    except _PASSING:
        raise
    except Exception:
        # A reject the ledger cannot hold as the source wrote it: kept escaped.
        reports.append(ledger.sources.record_batch(replace(last, rejected=_escaped(rejects)), now))
    total = reports[0]
    for report in reports[1:]:
        total = total.plus(report)
    return total


def _store_rows(
    ledger: SqlLedger,
    batch: SourceBatch,
    rows: Sequence[Row],
    now: datetime,
    reports: list[IngestReport],
    refused: list[Rejected],
) -> None:
    """Store ``rows`` in halves until each part is stored or is one refused row."""
    if not rows:
        return
    part = SourceBatch(
        source=batch.source,
        accounts=[r for r in rows if isinstance(r, Account)],
        contacts=[r for r in rows if isinstance(r, Contact)],
        events=[r for r in rows if isinstance(r, SourceEvent)],
        records_in=len(rows),
        reference_only=sum(1 for r in rows if not isinstance(r, SourceEvent)),
    )
    try:
        reports.append(ledger.sources.record_batch(part, now))
        return
    except _PASSING:
        raise
    except Exception as exc:
        if len(rows) == 1:
            refused.append(_not_storable(batch, rows[0], exc))
            return
    middle = len(rows) // 2
    _store_rows(ledger, batch, rows[:middle], now, reports, refused)
    _store_rows(ledger, batch, rows[middle:], now, reports, refused)


def _not_storable(batch: SourceBatch, row: Row, exc: Exception) -> Rejected:
    key = origin_key(row)
    # The exception's class, never its message: the database's message quotes the
    # statement and its values (addresses among them).
    reason = refusal(Refusal.NOT_STORABLE, f"the ledger refused it ({type(exc).__name__})")
    return Rejected(batch.source, batch.origins.get(key) or excerpt(key, 256), None, reason)


def _escaped(rejects: Sequence[Rejected]) -> list[Rejected]:
    """Rejects with every text escaped and capped to the quarantine's columns."""
    return [
        Rejected(
            r.source,
            excerpt(r.record, 500),
            None if r.field is None else excerpt(r.field, 128),
            excerpt(r.reason, 500),
            excerpt(r.raw),
        )
        for r in rejects
    ]


def _read_ahead(pages: Iterator[SourceBatch]) -> Iterator[SourceBatch]:
    """``pages`` in order, the next one read in a thread of its own while this one is
    stored: reading (polars, file reads) and storing (the database) overlap. At most
    two pages wait; a reading error is raised here, where the page would have come;
    stopping early (a storing error) stops the reading too.
    """
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand(kind: str, item: Any) -> bool:
        while not stop.is_set():
            try:
                handoff.put((kind, item), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for page in pages:
                if not hand("page", page):
                    return
            hand("done", None)
        except BaseException as exc:  # raised again in the storing thread
            hand("error", exc)
        finally:
            if isinstance(pages, Generator):
                pages.close()

    reader = threading.Thread(target=read, name="ingest-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            kind, item = handoff.get()
            if kind == "page":
                yield item
            elif kind == "error":
                raise item
            else:
                return
    finally:
        stop.set()
        reader.join()


def _worth_retrying(_task: object, _run: object, state: State[Any]) -> bool:
    """Retry a source that failed for a passing reason, not one that refused us."""
    if not state.is_failed():
        return False
    try:
        state.result()
    except PermanentIntegrationError:
        return False
    except Exception:
        return True
    return False


@task(
    name="ingest-sources",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_worth_retrying,
)
def ingest_sources(
    sources: Sequence[EventSource],
    ledger: SqlLedger,
    now: datetime,
    page_records: int = PAGE_RECORDS,
) -> list[IngestReport]:
    """Read every source from its stored cursor and store what is new.

    A source read in pages (the file drop) is stored a page at a time, each page in a
    transaction of its own, and its cursor moves with the last page: a run cut short
    reads the drop again and finds the events it stored already seen. Any other
    source's events, rejects and next cursor are committed together. Rows of one
    contact or account that disagree within a page are quarantined, not stored
    (:func:`without_conflicts`). A page the ledger refuses is stored row by row where
    it must (:func:`store_batch`): a row it cannot hold is quarantined, never the page
    lost.

    Args:
        sources: the CRM and NPS sources to read, in order.
        ledger: the ledger to store events and quarantined rows in.
        now: the time recorded as ingestion time.
        page_records: records held in memory at once from a paged source.

    Returns:
        One report per source: records in, new, already seen, quarantined.

    Raises:
        UnbalancedIngest: records in != new + already seen + quarantined + reference.
    """
    log = run_logger()
    reports = []
    for source in sources:
        cursor = ledger.sources.cursor(source.name)
        batches: Iterable[SourceBatch] = (
            _read_ahead(source.pages(cursor, page_records))
            if isinstance(source, PagedEventSource)
            else [source.fetch(cursor)]
        )
        report: IngestReport | None = None
        try:
            for batch in batches:
                stored = store_batch(ledger, without_conflicts(batch), now)
                if not stored.balanced:
                    raise UnbalancedIngest(f"{source.name}: {stored} does not add up")
                report = stored if report is None else report.plus(stored)
        finally:
            # A store failing stops the read-ahead now, not when the traceback goes.
            if isinstance(batches, Generator):
                batches.close()
        if report is None:
            raise UnbalancedIngest(f"{source.name}: a paged read gave no page, not its cursor")
        log.info(
            "source %s: %d records, %d new events, %d already seen, %d quarantined",
            source.name,
            report.records_in,
            report.new_events,
            report.already_seen,
            report.quarantined,
        )
        reports.append(report)
    return reports

"""Reading the event sources into the ledger."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State

from domain.errors import PermanentIntegrationError, ReferralError
from domain.models import IngestReport
from domain.ports import EventSource, PagedEventSource, SourceBatch
from domain.quarantine import split_conflicts
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
    split = split_conflicts(batch.source, batch.accounts, batch.contacts)
    if not split.rejected and not split.duplicates:
        return batch
    return replace(
        batch,
        accounts=split.accounts,
        contacts=split.contacts,
        rejected=(*batch.rejected, *split.rejected),
        reference_only=batch.reference_only - len(split.rejected),
    )


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
    (:func:`without_conflicts`).

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
        cursor = ledger.cursor(source.name)
        batches: Iterable[SourceBatch] = (
            source.pages(cursor, page_records)
            if isinstance(source, PagedEventSource)
            else [source.fetch(cursor)]
        )
        report: IngestReport | None = None
        for batch in batches:
            stored = ledger.record_batch(without_conflicts(batch), now)
            if not stored.balanced:
                raise UnbalancedIngest(f"{source.name}: {stored} does not add up")
            report = stored if report is None else report.plus(stored)
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

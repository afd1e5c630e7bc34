"""Reading the event sources into the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State

from domain.errors import PermanentIntegrationError, ReferralError
from domain.models import IngestReport
from domain.ports import EventSource
from integrations.ledger.sql import SqlLedger
from tasks._support import run_logger


class UnbalancedIngest(ReferralError):
    """A source's counts do not add up: records would be lost silently."""


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
    sources: Sequence[EventSource], ledger: SqlLedger, now: datetime
) -> list[IngestReport]:
    """Read every source from its stored cursor and store what is new.

    Each source's events, rejects and next cursor are committed together.

    Args:
        sources: the CRM and NPS sources to read, in order.
        ledger: the ledger to store events and quarantined rows in.
        now: the time recorded as ingestion time.

    Returns:
        One report per source: records in, new, already seen, quarantined.

    Raises:
        UnbalancedIngest: records in != new + already seen + quarantined + reference.
    """
    log = run_logger()
    reports = []
    for source in sources:
        batch = source.fetch(ledger.cursor(source.name))
        report = ledger.record_batch(batch, now)
        if not report.balanced:
            raise UnbalancedIngest(f"{source.name}: {report} does not add up")
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

"""The quarantine's retention: excerpts of refused input are kept for a while, not forever."""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from integrations.ledger.sql import SqlLedger
from tasks._support import run_logger


@task(name="purge-quarantine-excerpts", cache_policy=NO_CACHE)
def purge_quarantine_excerpts(ledger: SqlLedger, retention_days: int, now: datetime) -> int:
    """Empty the excerpts of quarantine rows older than ``retention_days``.

    The rows stay, with source, record, field and reason: what was refused and why is
    still known, only the text that may hold personal data goes. Purging again finds
    nothing more to do.

    Args:
        ledger: the ledger holding the quarantine.
        retention_days: how long an excerpt is kept.
        now: the moment of the purge (rows created before ``now - retention_days`` go).

    Returns:
        How many excerpts were purged.
    """
    purged = ledger.sources.purge_quarantine(now - timedelta(days=retention_days), now)
    run_logger().info(
        "purged the excerpts of %d quarantine rows older than %d days", purged, retention_days
    )
    return purged

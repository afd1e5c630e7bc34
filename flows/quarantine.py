"""The quarantine's retention as a flow: ``purge-quarantine``, a daily deployment.

Quarantined input keeps a masked excerpt for an operator to see what was wrong; after
``REFERRALS_QUARANTINE_RETENTION_DAYS`` (default 30) the excerpt is emptied and the
row, with its reason, kept.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from flows import bootstrap
from tasks.quarantine import purge_quarantine_excerpts


@flow(name="purge-quarantine")
@bootstrap.one_line_failure
def purge_quarantine(as_of: datetime | None = None) -> dict[str, int]:
    """Empty the excerpts of quarantine rows older than the retention period.

    Args:
        as_of: the moment of the purge (default: now; a naive one is taken as UTC).

    Returns:
        How many excerpts were purged, and the retention applied.
    """
    app = bootstrap.app()
    if as_of is None:
        now = datetime.now(UTC)
    else:
        now = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)
    days = app.settings.quarantine_retention_days
    purged = purge_quarantine_excerpts(app.ledger, days, now)
    return {"purged": purged, "retention_days": days}

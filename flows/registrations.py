"""Partner deal registration as a flow: the daily expiry.

Registrations are locked for the program's window; ``expire-registrations`` (a daily
deployment) closes the ones whose window has passed, so their companies are free for
the next partner, and publishes what it expired and what expires soon.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from flows import bootstrap
from tasks.registrations import (
    EXPIRED_BY,
    expire_registrations,
    publish_registration_report,
)


def _moment(as_of: datetime | None) -> datetime:
    """``as_of`` as an aware UTC datetime (a naive one is taken as UTC); now if not given."""
    if as_of is None:
        return datetime.now(UTC)
    return as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)


@flow(name="expire-registrations")
@bootstrap.one_line_failure
def expire_partner_registrations(
    as_of: datetime | None = None, expiring_within_days: int = 7
) -> dict[str, Any]:
    """Expire the partner registrations whose window has passed, and publish the
    ``partner-registrations`` artifacts (counts; expired and expiring-soon table).

    Args:
        as_of: the moment of expiry (default: now).
        expiring_within_days: how far ahead the "expiring soon" list looks.

    Returns:
        How many were expired, how many expire soon, and the counts per status.
    """
    app = bootstrap.app()
    now = _moment(as_of)
    run_id = flow_run.get_id()
    by = f"{EXPIRED_BY}:{run_id}" if run_id else EXPIRED_BY
    expired = expire_registrations(app.ledger, now, by)
    counts = publish_registration_report(app.ledger, expired, now, expiring_within_days)
    return {"expired_ids": [r.registration_id for r in expired], **counts}

"""Polling Stripe for events the webhook endpoint may have missed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE

from domain.errors import InputRejected
from domain.models import Rejected
from domain.stores.sources import SourcesStore
from domain.stripe_conversions import SOURCE, record_of
from integrations.ledger.stripe_conversions import STRIPE_EVENTS_CURSOR
from tasks._support import run_logger

QUARANTINE_STAGE = "stripe-events"
# Events listed again on every poll: Stripe's ``created`` has one-second resolution and
# an event may become listable a little after it was created.
DEFAULT_OVERLAP = timedelta(minutes=10)
# Without a cursor (the first poll), how far back to look. Stripe retries a webhook
# delivery for three days, so anything older was either delivered or lost for good.
DEFAULT_FIRST_LOOKBACK = timedelta(days=3)


class EventFeed(Protocol):
    """Lists provider events created since a Unix time (``StripeEventFeed``)."""

    def since(self, created_gte: int) -> Iterable[Mapping[str, Any]]: ...


class StripeInbox(Protocol):
    """What polling needs of the ledger (``SqlLedger`` with its Stripe mixins)."""

    @property
    def sources(self) -> SourcesStore:
        """The cursor and the quarantine."""
        ...

    def save_cursor(self, source: str, cursor: str, now: datetime) -> None: ...

    def store_stripe_event(self, event: Mapping[str, Any], now: datetime) -> bool: ...


@task(name="poll-stripe-events", cache_policy=NO_CACHE)
def poll_stripe_events(
    feed: EventFeed,
    ledger: StripeInbox,
    now: datetime,
    overlap: timedelta = DEFAULT_OVERLAP,
    first_lookback: timedelta = DEFAULT_FIRST_LOOKBACK,
) -> dict[str, int]:
    """Store in the inbox every Stripe event listed since the last poll, once each.

    The read starts at the newest ``created`` seen so far (``source_cursors`` under
    ``stripe-events``) minus ``overlap``, or ``now - first_lookback`` the first time.
    Events the webhook already delivered are duplicates in the inbox and change
    nothing. The cursor moves after every event is stored, and never backwards: a poll
    that fails half-way stores what it listed, and the next one lists it again.

    Args:
        feed: the provider's event list.
        ledger: the inbox and the cursor.
        now: the time of the poll, timezone-aware.
        overlap: how far before the cursor each poll starts again.
        first_lookback: how far back the first poll looks.

    Returns:
        Counts of events listed, new, already in the inbox and refused.
    """
    cursor = _parse(ledger.sources.cursor(STRIPE_EVENTS_CURSOR))
    start = (
        int((now - first_lookback).timestamp())
        if cursor is None
        else cursor - int(overlap.total_seconds())
    )
    listed = new = refused = 0
    newest = cursor
    for event in feed.since(start):
        listed += 1
        created = event.get("created")
        if isinstance(created, int) and not isinstance(created, bool):
            newest = created if newest is None else max(newest, created)
        try:
            new += ledger.store_stripe_event(event, now)
        except InputRejected as exc:
            refused += 1
            event_id = event.get("id")
            record = record_of(event_id) if isinstance(event_id, str) else "stripe events feed"
            ledger.sources.quarantine(
                [Rejected(SOURCE, record[:512], exc.field, exc.reason)], QUARANTINE_STAGE, now
            )
    if newest is not None and newest != cursor:
        ledger.save_cursor(STRIPE_EVENTS_CURSOR, str(newest), now)
    counts = {
        "listed": listed,
        "new": new,
        "already_seen": listed - new - refused,
        "refused": refused,
    }
    run_logger().info(
        "polled Stripe events since %s: %s",
        datetime.fromtimestamp(start, UTC).isoformat(),
        ", ".join(f"{k}={v}" for k, v in counts.items()),
    )
    return counts


def _parse(cursor: str | None) -> int | None:
    """The stored cursor (a Unix time), or None when missing or unreadable."""
    if cursor is None or not cursor.strip().isdigit():
        return None
    return int(cursor)

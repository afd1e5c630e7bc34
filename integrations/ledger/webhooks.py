"""The webhook inbox area of the ledger: Stripe events kept once each.

:class:`WebhookLedger` is a mixin of :class:`~integrations.ledger.base.LedgerBase`
meant to join :class:`~integrations.ledger.sql.SqlLedger`'s bases. Every method is one
transaction, and every write is idempotent: an event is new only if neither
``provider_events`` (the ledger's record of every provider event applied, keyed by
provider and event id) nor its own table (keyed by the event id) has it. Both inserts
are ``ON CONFLICT DO NOTHING`` in one transaction, so a redelivery, or two deliveries
racing, applies it once. SendGrid's email events are the ``emails`` store's
(:mod:`integrations.ledger.email_events`). No secret is stored here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update

from domain.errors import InputRejected
from integrations.ledger.base import (
    LedgerBase,
    chunks,
)
from integrations.ledger.tables import (
    EVENT_ID_CHARS,
    OBJECT_ID_CHARS,
    STRIPE_TYPE_CHARS,
    T_STRIPE_EVENTS,
    ProviderEventRow,
)

STRIPE = "stripe"


_STRIPE_RECORD = "stripe webhook"


@dataclass(frozen=True, slots=True)
class StoredStripeEvent:
    """A Stripe event from the inbox.

    Attributes:
        event_id: Stripe's event id (``evt_...``).
        type: the event type, e.g. ``charge.refunded``.
        created_at: when Stripe created the event (aware, UTC): the order of events.
        livemode: whether it came from live mode (test mode events are kept too).
        object_id: ``data.object.id``, if the event had one.
        payload: the event as received.
        received_at: when the ledger first stored it.
    """

    event_id: str
    type: str
    created_at: datetime
    livemode: bool
    object_id: str | None
    payload: dict[str, Any]
    received_at: datetime


class WebhookLedger(LedgerBase):
    """The ledger's webhook inbox; a mixin for :class:`~integrations.ledger.sql.SqlLedger`."""

    # -- Stripe ----------------------------------------------------------------------

    def store_stripe_event(self, event: Mapping[str, Any], now: datetime) -> bool:
        """Keep a (verified) Stripe event in the inbox, once.

        Storing depends on nothing but the event itself, so events may arrive in any
        order (a refund before its payment); the stages that read the inbox order
        them by Stripe's ``created``.

        Args:
            event: the event as received (``id``, ``type``, ``created``, ``livemode``,
                ``data.object``...).
            now: the time of receipt, timezone-aware.

        Returns:
            True the first time the event id is seen, False ever after.

        Raises:
            InputRejected: the event lacks a field the inbox needs, or an id or type
                is longer than the ledger stores.
        """
        row = _stripe_row(event, now)
        with self._begin() as conn:
            recorded = self._record_provider_events(
                conn, STRIPE, [(row["event_id"], row["type"])], now
            )
            stored = self._insert_ignore(conn, T_STRIPE_EVENTS, [row], T_STRIPE_EVENTS.c.event_id)
        return bool(recorded) and bool(stored)

    def unprocessed_stripe_events(
        self, types: Sequence[str] | None, limit: int
    ) -> list[StoredStripeEvent]:
        """Stripe events no stage has marked processed, oldest ``created`` first.

        Args:
            types: only these event types; ``None`` for every type.
            limit: at most this many.
        """
        with self._connect() as conn:
            return read_unprocessed_stripe_events(conn, types, None, limit)

    def mark_stripe_events_processed(self, event_ids: Sequence[str], now: datetime) -> int:
        """Mark events processed; returns how many were not already (a rerun marks 0)."""
        with self._begin() as conn:
            return mark_stripe_events(conn, event_ids, now)

    # -- shared ----------------------------------------------------------------------

    def _record_provider_events(
        self, conn: Connection, provider: str, events: Sequence[tuple[str, str]], now: datetime
    ) -> set[str]:
        """Record (event id, type) pairs in ``provider_events``; the ids that were new."""
        return set(
            self._insert_ignore(
                conn,
                ProviderEventRow,
                [
                    {"provider": provider, "event_id": event_id, "type": type_, "received_at": now}
                    for event_id, type_ in events
                ],
                ProviderEventRow.event_id,
            )
        )


def _stripe_row(event: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    def refuse(field_: str, reason: str) -> InputRejected:
        return InputRejected(_STRIPE_RECORD, field_, reason)

    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise refuse("id", "event has no id")
    if len(event_id) > EVENT_ID_CHARS:
        raise refuse("id", "event id is longer than the ledger stores")
    type_ = event.get("type")
    if not isinstance(type_, str) or not type_:
        raise refuse("type", "event has no type")
    if len(type_) > STRIPE_TYPE_CHARS:
        raise refuse("type", "event type is longer than the ledger stores")
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        raise refuse("created", "event has no integer created time")
    try:
        created_at = datetime.fromtimestamp(created, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise refuse("created", "created time out of range") from None
    livemode = event.get("livemode")
    if not isinstance(livemode, bool):
        raise refuse("livemode", "event has no livemode flag")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    object_id = obj.get("id") if isinstance(obj, Mapping) else None
    return {
        "event_id": event_id,
        "type": type_,
        "created_at": created_at,
        "livemode": livemode,
        # An id too long to index is still in the payload; only the shortcut is lost.
        "object_id": object_id
        if isinstance(object_id, str) and len(object_id) <= OBJECT_ID_CHARS
        else None,
        "payload": dict(event),
        "received_at": now,
        "processed_at": None,
    }


def read_unprocessed_stripe_events(
    conn: Connection,
    types: Sequence[str] | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[StoredStripeEvent]:
    """Unprocessed Stripe events of ``types`` (``None``: all), oldest ``created`` first,
    after ``after`` (created, event id): a stage leaving an event unprocessed for now
    passes it by and reads on, instead of reading it again."""
    t = T_STRIPE_EVENTS
    stmt = select(t).where(t.c.processed_at.is_(None))
    if types is not None:
        if not types:
            return []
        stmt = stmt.where(t.c.type.in_(list(types)))
    if after is not None:
        stmt = stmt.where(
            or_(
                t.c.created_at > after[0],
                and_(t.c.created_at == after[0], t.c.event_id > after[1]),
            )
        )
    stmt = stmt.order_by(t.c.created_at, t.c.event_id).limit(limit)
    return [
        StoredStripeEvent(
            event_id=r["event_id"],
            type=r["type"],
            created_at=r["created_at"],
            livemode=bool(r["livemode"]),
            object_id=r["object_id"],
            payload=dict(r["payload"]),
            received_at=r["received_at"],
        )
        for r in conn.execute(stmt).mappings()
    ]


def mark_stripe_events(conn: Connection, event_ids: Sequence[str], now: datetime) -> int:
    """Mark events processed; how many were not already."""
    marked = 0
    for chunk in chunks(sorted(set(event_ids))):
        marked += conn.execute(
            update(T_STRIPE_EVENTS)
            .where(T_STRIPE_EVENTS.c.event_id.in_(chunk), T_STRIPE_EVENTS.c.processed_at.is_(None))
            .values(processed_at=now)
        ).rowcount
    return marked

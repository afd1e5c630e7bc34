"""The webhook inbox: events SendGrid and Stripe posted to us, each kept once.

Imported by :mod:`integrations.ledger.tables` so these
tables join ``Base.metadata``; revision ``0002`` creates them.

* ``email_events``: one row per SendGrid ``sg_event_id``. Only our opaque
  ``message_id`` links an event to a person (through ``asks`` / ``notifications``);
  the recipient's address is never stored, and ``reason`` has addresses redacted.
* ``stripe_events``: one row per Stripe event id, with the event as received. This
  is the inbox the conversion and clawback stages read, oldest ``created_at`` first,
  so the order in which Stripe delivered (a refund before its payment) never matters.
  ``processed_at`` is set once a stage has consumed the event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, String, Table, text
from sqlalchemy.orm import Mapped, mapped_column

from integrations.ledger.tables.core import EVENT_ID_CHARS, Base

# Id widths match ``provider_events.event_id``, which records the same ids.
MESSAGE_ID_CHARS = 128
STRIPE_TYPE_CHARS = 64
OBJECT_ID_CHARS = 128
REASON_CHARS = 512


class EmailEventRow(Base):
    """One SendGrid event about one of our emails, once per ``sg_event_id``."""

    __tablename__ = "email_events"
    sg_event_id: Mapped[str] = mapped_column(String(EVENT_ID_CHARS), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(MESSAGE_ID_CHARS), index=True)
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(String(REASON_CHARS))
    # None when the message id matched no ask and no notification (not ours, or gone).
    contact_id: Mapped[str | None] = mapped_column(String(128), index=True)
    received_at: Mapped[datetime]


class StripeEventRow(Base):
    """One Stripe event, as received, once per event id."""

    __tablename__ = "stripe_events"
    event_id: Mapped[str] = mapped_column(String(EVENT_ID_CHARS), primary_key=True)
    type: Mapped[str] = mapped_column(String(STRIPE_TYPE_CHARS))
    # Stripe's own ``created``: the order of what happened, not of delivery.
    created_at: Mapped[datetime]
    livemode: Mapped[bool] = mapped_column(Boolean)
    # ``data.object.id`` (a charge, refund, transfer...), to find an object's events.
    object_id: Mapped[str | None] = mapped_column(String(OBJECT_ID_CHARS), index=True)
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]
    __table_args__ = (
        # The consumers' queue: only unprocessed rows, oldest event first.
        Index(
            "ix_stripe_events_unprocessed",
            "created_at",
            "event_id",
            sqlite_where=text("processed_at IS NULL"),
            postgresql_where=text("processed_at IS NULL"),
        ),
    )


# One name per table, for SQLAlchemy Core statements.
T_EMAIL_EVENTS: Table = EmailEventRow.__table__  # type: ignore[assignment]
T_STRIPE_EVENTS: Table = StripeEventRow.__table__  # type: ignore[assignment]

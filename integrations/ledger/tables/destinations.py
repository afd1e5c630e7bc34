"""The payout destination changes: every change of a referrer's Stripe connected
account or customer id between two reads of a source, as it was seen.

Imported by :mod:`integrations.ledger.tables` so the table
joins ``Base.metadata``; revision ``0019`` creates it, with its append-only guards.

A row is written in the transaction that stores the contact with its new value, so a
change is never stored without its record. A referrer with a change seen after the
last approval of one of their rewards flagged ``payout_destination_changed`` has every
reward routed from then on flagged so, and sent to a person whatever its amount (see
``ledger.rewards.to_route``). Never updated, never deleted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from integrations.ledger.tables.core import Base


class PayoutDestinationChangeRow(Base):
    """One payout destination field of one contact, read with a new value."""

    __tablename__ = "payout_destination_changes"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(128))
    field: Mapped[str] = mapped_column(String(32))
    # NULL: the contact had no destination of this kind before.
    old_value: Mapped[str | None] = mapped_column(String(64))
    new_value: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    seen_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint(
            "field in ('stripe_account_id', 'stripe_customer_id')", name="destination_field"
        ),
        Index("ix_payout_destination_changes_contact_id", "contact_id", "seen_at"),
    )


# Guarded by triggers (revision 0019), as the money tables of schema.py.
NO_DELETE = ("payout_destination_changes",)
NO_UPDATE = ("payout_destination_changes",)


# One name per table, for SQLAlchemy Core statements.
T_PAYOUT_DESTINATION_CHANGES: Table = PayoutDestinationChangeRow.__table__  # type: ignore[assignment]

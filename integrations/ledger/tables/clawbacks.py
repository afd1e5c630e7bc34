"""The clawback tables: what each refund, chargeback or churn took from each reward, and
the reversals asked of the payment provider.

Imported by :mod:`integrations.ledger.tables` so these tables
join ``Base.metadata``; revision ``0008`` creates them, with their append-only guards.

* ``clawbacks``: one row per (reward, provider event), written in the same transaction
  as the ledger entries it explains (``cancelled`` and ``clawed_back``, whose ``ref`` is
  the clawback id) and as the event being marked processed. The unique key makes an
  event delivered five times, or applied by two racing runs, count once. It also keeps
  the payment's cumulative refunded and disputed amounts, so a second partial refund
  takes back only what it adds. Never updated, never deleted.
* ``reversals``: the reversal outbox, like ``payouts``: the row and its fixed
  idempotency key (``reward:<id>:reversal:<event id>``) are committed before the
  provider is called; the result settles it (``succeeded`` books a ``reversed`` entry;
  ``unrecovered`` and ``failed`` leave the referrer's debt to be netted). Never deleted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from integrations.ledger.tables.core import EVENT_ID_CHARS, KEY_CHARS, Base

REVERSAL_STATUSES = ("pending", "succeeded", "unrecovered", "failed")


class ClawbackRow(Base):
    """What one provider event took from one reward; once per (reward, event)."""

    __tablename__ = "clawbacks"
    clawback_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reward_id: Mapped[str] = mapped_column(String(36), ForeignKey("rewards.reward_id"), index=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID_CHARS))
    cause: Mapped[str] = mapped_column(String(16))
    # What the losses of one payment add up under: the charge id (the subscription id
    # for churn), and that payment's cumulative refunded and disputed amounts.
    payment_key: Mapped[str] = mapped_column(String(128))
    payment_minor: Mapped[int] = mapped_column(BigInteger)
    refunded_minor: Mapped[int] = mapped_column(BigInteger)
    disputed_minor: Mapped[int] = mapped_column(BigInteger)
    cancelled_minor: Mapped[int] = mapped_column(BigInteger)
    clawed_back_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status_before: Mapped[str] = mapped_column(String(24))
    occurred_at: Mapped[datetime]
    created_at: Mapped[datetime]
    __table_args__ = (
        UniqueConstraint("reward_id", "event_id"),
        CheckConstraint("cause in ('refund', 'chargeback', 'churn')", name="cause"),
        CheckConstraint(
            "cancelled_minor >= 0 AND clawed_back_minor >= 0 AND refunded_minor >= 0 "
            "AND disputed_minor >= 0 AND payment_minor >= 0",
            name="amounts_not_negative",
        ),
        CheckConstraint("length(currency) = 3", name="currency_iso"),
    )


class ReversalRow(Base):
    """The reversal outbox: written, with its idempotency key, before the provider call."""

    __tablename__ = "reversals"
    reversal_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    clawback_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("clawbacks.clawback_id"), unique=True
    )
    reward_id: Mapped[str] = mapped_column(String(36), ForeignKey("rewards.reward_id"), index=True)
    payout_id: Mapped[str] = mapped_column(String(36), ForeignKey("payouts.payout_id"))
    rail: Mapped[str] = mapped_column(String(32))
    destination: Mapped[str | None] = mapped_column(String(64))
    payout_ref: Mapped[str | None] = mapped_column(String(128))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    idempotency_key: Mapped[str] = mapped_column(String(KEY_CHARS), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    provider_ref: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(String(512))
    tries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint(
            "status in ('pending', 'succeeded', 'unrecovered', 'failed')", name="status"
        ),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("length(currency) = 3", name="currency_iso"),
        Index("ix_reversals_status", "status"),
    )


# Guarded by triggers (revision 0008), as the money tables of schema.py.
NO_DELETE = ("clawbacks", "reversals")
NO_UPDATE = ("clawbacks",)


# One name per table, for SQLAlchemy Core statements.
T_CLAWBACKS: Table = ClawbackRow.__table__  # type: ignore[assignment]
T_REVERSALS: Table = ReversalRow.__table__  # type: ignore[assignment]

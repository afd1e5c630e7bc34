"""The payments that earned a reward by themselves: a recurring rule's invoice, and the
payment intent and charge that paid it.

Imported by :mod:`integrations.ledger.tables` so the table
joins ``Base.metadata``; revision ``0016a`` creates it, with its append-only guards.

``conversion_payments`` names a conversion's *first* payment: a refund of it reaches
the conversion's rewards. A recurring rule earns one reward per invoice the referee
pays later (``<rule id>@<invoice>``), and a refund or dispute of *that* invoice must
take back that reward and no other. ``reward_payments`` names, per such reward, the
ids of the payment that earned it, each an alias carrying the invoice's amount (as in
``conversion_payments``: look a loss up by the id it names, never sum the rows):

* written with the reward, in the same transaction, from the invoice's ``invoice.paid``
  event (before the 2025-03-31 API version it names its payment intent and charge) and
  from the ``invoice_payment.paid`` events naming the invoice (from that version on);
* completed by a payment link (``invoice_payment.paid``) read after the reward.

A reward with rows here is reached by a loss only through them (or by churn, which
takes everything). Never updated, never deleted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from integrations.ledger.tables.core import Base


class RewardPaymentRow(Base):
    """One id of the payment that earned one reward by itself; once per (id, reward)."""

    __tablename__ = "reward_payments"
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    payment_ref: Mapped[str] = mapped_column(String(128), primary_key=True)
    reward_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("rewards.reward_id"), primary_key=True
    )
    # The invoice's amount paid: what a partial refund or a dispute is a share of.
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # When the invoice was paid: the clawback window is measured from it.
    paid_at: Mapped[datetime]
    created_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
        CheckConstraint("length(currency) = 3", name="currency_iso"),
        Index("ix_reward_payments_reward_id", "reward_id"),
    )


# Guarded by triggers (revision 0016a), as the money tables of schema.py.
NO_DELETE = ("reward_payments",)
NO_UPDATE = ("reward_payments",)


# One name per table, for SQLAlchemy Core statements.
T_REWARD_PAYMENTS: Table = RewardPaymentRow.__table__  # type: ignore[assignment]

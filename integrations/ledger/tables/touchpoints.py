"""The attribution and reward-rule tables: who touched each referee, and how each reward
computed by the reward rules was reached.

Imported by :mod:`integrations.ledger.tables` so these tables
join ``Base.metadata``; revision ``0012`` creates them, with their append-only guards.

* ``touchpoints``: one row per touch of a referee by a referrer (the code used at a
  conversion, a click on an ask, a partner's registration), written when the
  conversion is recorded. The referee is named by whatever the conversion knew of it
  (CRM account, CRM contact, Stripe customer); a later conversion of the same referee
  finds the touch by any of them. Never updated, never deleted: an old reward's credit
  can always be recomputed.
* ``reward_terms``: one row per reward computed since revision 0012, in the same
  transaction as the reward: when it was earned (the period caps count it in; for a
  recurring rule the invoice's time, not the conversion's), the tier count, the amount
  before the caps and the cap that reduced it. Never updated, never deleted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from integrations.ledger.tables.core import Base

TOUCHPOINT_KINDS = ("code", "ask_click", "registration")


class TouchpointRow(Base):
    """One touch of a referee by a referrer, once per id (derived from kind, ref,
    referrer and referee)."""

    __tablename__ = "touchpoints"
    touchpoint_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    referrer_id: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # The conversion id, the SendGrid event id or the registration id.
    ref: Mapped[str] = mapped_column(String(330))
    referee_account_id: Mapped[str | None] = mapped_column(String(128), index=True)
    referee_contact_id: Mapped[str | None] = mapped_column(String(128), index=True)
    referee_customer: Mapped[str | None] = mapped_column(String(128), index=True)
    occurred_at: Mapped[datetime]
    created_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint("kind in ('code', 'ask_click', 'registration')", name="kind"),
        CheckConstraint(
            "referee_account_id is not null or referee_contact_id is not null"
            " or referee_customer is not null",
            name="names_a_referee",
        ),
    )


class RewardTermsRow(Base):
    """How one reward was reached: its earning time, tier count and cap."""

    __tablename__ = "reward_terms"
    reward_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("rewards.reward_id"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    earned_at: Mapped[datetime]
    # The tier period (2026-Q4) or the invoice a recurring reward is for.
    period: Mapped[str | None] = mapped_column(String(128))
    referral_number: Mapped[int | None] = mapped_column(Integer)
    uncapped_minor: Mapped[int] = mapped_column(BigInteger)
    capped_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint("uncapped_minor >= 0", name="uncapped_not_negative"),
        Index("ix_reward_terms_earned_at", "earned_at"),
    )


# Guarded by triggers (revision 0012), as the money tables of schema.py.
NO_DELETE = ("touchpoints", "reward_terms")
NO_UPDATE = ("touchpoints", "reward_terms")


# One name per table, for SQLAlchemy Core statements.
T_TOUCHPOINTS: Table = TouchpointRow.__table__  # type: ignore[assignment]
T_REWARD_TERMS: Table = RewardTermsRow.__table__  # type: ignore[assignment]

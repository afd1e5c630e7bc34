"""The referee-discount tables: the program's coupon and one promotion code per code.

Imported by :mod:`integrations.ledger.tables` so these tables
join ``Base.metadata``; revision ``0013`` creates them.

Both are outboxes, like ``payouts``: the row and its fixed idempotency key
(``program:<coupon id>:coupon``, ``code:<code>:promotion_code``; ledger-only records
end in ``:ledger``) are committed before the provider is called, and the result
settles it. One row per (coupon or code, rail): a code is published once at Stripe,
and once as a ledger-only record when there was no Stripe key.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from integrations.ledger.tables.core import KEY_CHARS, Base

DISCOUNT_STATUSES = ("pending", "succeeded", "failed")
_STATUS_CHECK = "status in ('pending', 'succeeded', 'failed')"
_RAIL_CHECK = "rail in ('stripe', 'ledger_only')"


class DiscountCouponRow(Base):
    """The program's coupon at a rail, with the terms it was created with."""

    __tablename__ = "discount_coupons"
    coupon_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rail: Mapped[str] = mapped_column(String(16), primary_key=True)
    # e.g. "10% off, repeating 3 months": a rules file changing them is refused.
    terms: Mapped[str] = mapped_column(String(256))
    idempotency_key: Mapped[str] = mapped_column(String(KEY_CHARS), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    provider_ref: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(String(512))
    tries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint(_STATUS_CHECK, name="status"),
        CheckConstraint(_RAIL_CHECK, name="rail"),
    )


class RefereeDiscountRow(Base):
    """A referral code published as a promotion code of the program's coupon."""

    __tablename__ = "referee_discounts"
    code: Mapped[str] = mapped_column(
        String(64), ForeignKey("referral_codes.code"), primary_key=True
    )
    rail: Mapped[str] = mapped_column(String(16), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(128))
    coupon_id: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(KEY_CHARS), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    provider_ref: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(String(512))
    tries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint(_STATUS_CHECK, name="status"),
        CheckConstraint(_RAIL_CHECK, name="rail"),
        Index("ix_referee_discounts_status", "rail", "status", "code"),
    )


# One name per table, for SQLAlchemy Core statements.
T_DISCOUNT_COUPONS: Table = DiscountCouponRow.__table__  # type: ignore[assignment]
T_REFEREE_DISCOUNTS: Table = RefereeDiscountRow.__table__  # type: ignore[assignment]

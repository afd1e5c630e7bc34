"""Referrers' Stripe Connect accounts (issue 15, getting paid).

Imported by :mod:`integrations.ledger.tables` so the tables join ``Base.metadata``;
revision ``0024`` creates them, with their guards.

``connect_accounts``: one row per referrer who started onboarding, written with the
idempotency key *before* the provider is asked to create the account; the account id
is filled in once, from NULL, and never replaced (a trigger refuses any other update).
``connect_account_states``: every state read from the provider (webhook, return URL,
payout run) that differs from the last one, appended; never updated. Neither table
is ever deleted from.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Index, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from integrations.ledger.tables.core import Base

CONNECT_STATUSES = ("onboarding", "enabled", "restricted")
CONNECT_SEEN_BY = ("return", "webhook", "payout-run")


class ConnectAccountRow(Base):
    """A referrer's connected account, and the key that created it."""

    __tablename__ = "connect_accounts"
    referrer_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    # NULL until the provider's answer is stored (or after a crash before that).
    account_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    attached_at: Mapped[datetime | None]


class ConnectAccountStateRow(Base):
    """One state of a connected account as read from the provider."""

    __tablename__ = "connect_account_states"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    referrer_id: Mapped[str] = mapped_column(String(128))
    account_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    details_submitted: Mapped[bool] = mapped_column(Boolean)
    charges_enabled: Mapped[bool] = mapped_column(Boolean)
    payouts_enabled: Mapped[bool] = mapped_column(Boolean)
    transfers_active: Mapped[bool] = mapped_column(Boolean)
    seen_by: Mapped[str] = mapped_column(String(16))
    seen_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint("status in ('onboarding', 'enabled', 'restricted')", name="connect_status"),
        CheckConstraint("seen_by in ('return', 'webhook', 'payout-run')", name="seen_by"),
        Index("ix_connect_account_states_referrer_id", "referrer_id", "id"),
    )


NO_DELETE = ("connect_accounts", "connect_account_states")
NO_UPDATE = ("connect_account_states",)


# One name per table, for SQLAlchemy Core statements.
T_CONNECT_ACCOUNTS: Table = ConnectAccountRow.__table__  # type: ignore[assignment]
T_CONNECT_ACCOUNT_STATES: Table = ConnectAccountStateRow.__table__  # type: ignore[assignment]

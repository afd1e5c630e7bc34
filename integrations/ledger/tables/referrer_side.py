"""The referrer side (issue 15): reward choices made on referrers' pages, and the
requests for a fresh page link (their rate limit). Both append-only."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from integrations.ledger.tables.core import Base


class RewardChoiceRow(Base):
    """A referrer's choice of how to take rewards; the latest one counts."""

    __tablename__ = "reward_choices"
    choice_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    referrer_id: Mapped[str] = mapped_column(String(128))
    choice: Mapped[str] = mapped_column(String(24))
    chosen_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint("choice in ('cash', 'account_credit')", name="choice"),
        Index("ix_reward_choices_referrer_id", "referrer_id", "choice_id"),
    )


class PageLinkRequestRow(Base):
    """One request for a fresh page link (``/p/new``), known address or not: keyed
    hashes only (of the address typed and of the visitor cookie), never the address."""

    __tablename__ = "page_link_requests"
    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64))
    visitor_hash: Mapped[str] = mapped_column(String(64))
    # How many links were queued for it (0: unknown address, or over the limit).
    queued: Mapped[int] = mapped_column(Integer)
    requested_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint("length(address_hash) = 64", name="address_hash_hex"),
        CheckConstraint("length(visitor_hash) = 64", name="visitor_hash_hex"),
        Index("ix_page_link_requests_address", "address_hash", "requested_at"),
        Index("ix_page_link_requests_visitor", "visitor_hash", "requested_at"),
    )


NO_DELETE = ("reward_choices", "page_link_requests")
NO_UPDATE = ("reward_choices", "page_link_requests")


# One name per table, for SQLAlchemy Core statements.
T_REWARD_CHOICES: Table = RewardChoiceRow.__table__  # type: ignore[assignment]
T_PAGE_LINK_REQUESTS: Table = PageLinkRequestRow.__table__  # type: ignore[assignment]

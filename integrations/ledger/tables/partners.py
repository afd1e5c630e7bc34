"""The partner registration table: who claimed which company domain, and what became of it.

Imported by :mod:`integrations.ledger.tables` so the table
joins ``Base.metadata``; revision ``0011`` creates it, with its no-delete guard.

``partner_registrations`` keeps one row per claim accepted. The row is the claim's
current state: its status moves ``active`` -> ``extended`` (the deal progressed) ->
``expired`` (the scheduled expiry, or a later claim finding it lapsed) or
``converted`` (a won deal was credited through it), and the move to a closed status
records when (``closed_at``) and by whom (``closed_by``: the run or the claim that
closed it). The status lives on the row because the lock does: the partial unique
index ``uq_partner_registrations_holding_domain`` allows one holding (active or
extended) registration per domain, so of two partners registering one company at the
same moment exactly one insert succeeds, whatever the application does. Rows are
never deleted: the history of claims is how a conflict is documented.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Table, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from integrations.ledger.tables.core import Base

DOMAIN_CHARS = 253  # the longest DNS name
STATUSES = ("active", "extended", "expired", "converted")
HOLDING_SQL = "status in ('active', 'extended')"


class PartnerRegistrationRow(Base):
    """One partner's claim on one company domain."""

    __tablename__ = "partner_registrations"
    registration_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    partner_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("contacts.contact_id"), index=True
    )
    domain: Mapped[str] = mapped_column(String(DOMAIN_CHARS))
    # A CRM contact id, or "hmac-sha256:<hex>" (keyed) of an address: never the address.
    # Rows from before the hash was keyed hold "sha256:<hex>" (unkeyed), left as they are.
    contact_ref: Mapped[str] = mapped_column(String(128))
    evidence: Mapped[str] = mapped_column(Text)
    registered_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16))
    extensions: Mapped[int] = mapped_column(Integer, default=0)
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(128))
    conversion_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("conversions.conversion_id")
    )
    updated_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint("status in ('active', 'extended', 'expired', 'converted')", name="status"),
        CheckConstraint("expires_at > registered_at", name="expires_after_registered"),
        CheckConstraint("extensions >= 0", name="extensions_not_negative"),
        # A holding claim is open; a closed one says when it closed.
        CheckConstraint(
            "(status in ('active', 'extended') and closed_at is null) "
            "or (status in ('expired', 'converted') and closed_at is not null)",
            name="closed_when_closed",
        ),
        CheckConstraint(
            "status != 'converted' or conversion_id is not null", name="converted_by_conversion"
        ),
        # First to register wins: one holding claim per domain, whoever writes.
        Index(
            "uq_partner_registrations_holding_domain",
            "domain",
            unique=True,
            sqlite_where=text(HOLDING_SQL),
            postgresql_where=text(HOLDING_SQL),
        ),
        Index("ix_partner_registrations_domain", "domain", "registered_at"),
        Index("ix_partner_registrations_status", "status", "expires_at"),
    )


# One name per table, for SQLAlchemy Core statements.
T_PARTNER_REGISTRATIONS: Table = PartnerRegistrationRow.__table__  # type: ignore[assignment]

"""Detractor hand-offs: each detractor follow-up told to a person, once.

Imported by :mod:`integrations.ledger.tables` so the table
joins ``Base.metadata``; revision ``0022`` creates it, with its guards.

A row is the record that a follow-up was handed on, written before anything is sent.
It has two channels, each its own small status machine like an ask's:

* ``email_*``: the email to the detractor owner. ``queued`` -> ``sending`` (claimed
  before the call, ``email_at`` holding the claim time) -> ``accepted`` or ``failed``,
  back to ``queued`` when the provider said "try later". A claim never settled (the
  sender died mid-call) becomes ``unknown`` and is left for a person, never re-sent.
  ``skipped``: the follow-up was stored before hand-offs existed (the migration's
  backfill), so nobody gets a flood of old detractors on the day this ships.
* ``crm_*``: the CRM task on the contact, the same machine with ``created`` for
  ``accepted``; NULL when no CRM was configured when the row was written.

Triggers refuse DELETE, a change of the row's identity, and any move out of a final
status (``accepted``, ``created``, ``skipped``): what was sent stays recorded as sent.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from integrations.ledger.tables.core import Base

EMAIL_STATUSES = ("queued", "sending", "accepted", "failed", "unknown", "skipped")
CRM_STATUSES = ("queued", "sending", "created", "failed", "unknown")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} in ({', '.join(repr(v) for v in values)})"


class DetractorHandoffRow(Base):
    """One detractor follow-up handed on: the owner's email and the CRM task."""

    __tablename__ = "detractor_handoffs"
    source_event: Mapped[str] = mapped_column(
        String(330), ForeignKey("follow_ups.source_event"), primary_key=True
    )
    contact_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime]
    email_status: Mapped[str] = mapped_column(String(16))
    email_ref: Mapped[str | None] = mapped_column(String(128))
    email_error: Mapped[str | None] = mapped_column(String(512))
    # The claim time while ``sending``, the send time once ``accepted``.
    email_at: Mapped[datetime | None]
    crm_status: Mapped[str | None] = mapped_column(String(16))
    crm_ref: Mapped[str | None] = mapped_column(String(128))
    crm_error: Mapped[str | None] = mapped_column(String(512))
    crm_at: Mapped[datetime | None]
    __table_args__ = (
        CheckConstraint(_one_of("email_status", EMAIL_STATUSES), name="email_status"),
        CheckConstraint(
            f"crm_status IS NULL OR {_one_of('crm_status', CRM_STATUSES)}", name="crm_status"
        ),
        Index("ix_detractor_handoffs_email_status", "email_status", "source_event"),
        Index("ix_detractor_handoffs_crm_status", "crm_status", "source_event"),
    )


# One name per table, for SQLAlchemy Core statements.
T_DETRACTOR_HANDOFFS: Table = DetractorHandoffRow.__table__  # type: ignore[assignment]

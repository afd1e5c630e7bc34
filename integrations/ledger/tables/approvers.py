"""Approvers: who may release money, the change log of that list, the one-time codes
spent, and the decisions refused.

Imported by :mod:`integrations.ledger.tables`; revision
``0018`` creates the tables and their guards. ``approvers`` holds each approver's
current state; every change to it is written to ``approver_events`` in the same
transaction (who, when, what), and that log, the spent codes and the refused attempts
are never updated or deleted. An approver is never deleted either: a decision names
the approver id it was made under for as long as the ledger lives.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from integrations.ledger.tables.core import Base


class ApproverRow(Base):
    __tablename__ = "approvers"
    approver_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    # Normalised (domain.approvers.normalise_email): one mailbox, one approver.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    contact_id: Mapped[str | None] = mapped_column(String(128))
    limit_minor: Mapped[int] = mapped_column(BigInteger)
    limit_currency: Mapped[str] = mapped_column(String(3))
    active: Mapped[bool] = mapped_column(Boolean)
    demo: Mapped[bool] = mapped_column(Boolean)
    # The RFC 6238 secret, encrypted (Fernet) with the key from settings; None until
    # enrolled. The plain secret is shown once, at enrolment, and never stored.
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint("limit_minor >= 0", name="limit_not_negative"),
        CheckConstraint("length(limit_currency) = 3", name="limit_currency_iso"),
    )


class ApproverEventRow(Base):
    """One change to the approvers: added, enrolled, disabled, enabled."""

    __tablename__ = "approver_events"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    approver_id: Mapped[str] = mapped_column(String(64), ForeignKey("approvers.approver_id"))
    action: Mapped[str] = mapped_column(String(16))
    # Who made the change: the operating-system user and host that ran the command.
    actor: Mapped[str] = mapped_column(String(200))
    details: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint(
            "action in ('added', 'enrolled', 'disabled', 'enabled')", name="action_known"
        ),
        Index("ix_approver_events_approver_id", "approver_id"),
    )


class ApproverCodeRow(Base):
    """A one-time code spent: its RFC 6238 time step, never accepted again."""

    __tablename__ = "approver_codes_used"
    approver_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("approvers.approver_id"), primary_key=True
    )
    time_step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    used_at: Mapped[datetime]


class ApprovalAttemptRow(Base):
    """A decision refused: who claimed to decide, on what, and why it did not count."""

    __tablename__ = "approval_attempts"
    attempt_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reward_id: Mapped[str] = mapped_column(String(36))
    # As given in the form (cut to 64 characters): it may name nobody.
    claimed_approver_id: Mapped[str] = mapped_column(String(64))
    wrong_code: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime]
    __table_args__ = (Index("ix_approval_attempts_claimed_at", "claimed_approver_id", "at"),)


NO_DELETE = ("approvers", "approver_events", "approver_codes_used", "approval_attempts")
NO_UPDATE = ("approver_events", "approver_codes_used", "approval_attempts")


# One name per table, for SQLAlchemy Core statements.
T_APPROVERS: Table = ApproverRow.__table__  # type: ignore[assignment]
T_APPROVER_EVENTS: Table = ApproverEventRow.__table__  # type: ignore[assignment]
T_APPROVER_CODES_USED: Table = ApproverCodeRow.__table__  # type: ignore[assignment]
T_APPROVAL_ATTEMPTS: Table = ApprovalAttemptRow.__table__  # type: ignore[assignment]

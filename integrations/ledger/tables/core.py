"""The ledger's tables, as SQLAlchemy 2 declarative models.

The invariants that keep money right live here, in the database, not in Python:

* one reward per (conversion, rule, referrer): ``uq_rewards_conversion_rule_referrer``;
* one live payout per reward: partial unique index ``uq_payouts_live_reward`` (a payout
  that failed for good may be followed by a new attempt, never by a second live one);
* one idempotency key per payout, stored before any call to the provider;
* one application per provider event id: ``provider_events`` primary key;
* one decision per approval stage of a reward: ``uq_approval_decisions_reward_stage``;
* append-only money: triggers (created by the migration) refuse UPDATE and DELETE on
  ``ledger_entries`` and ``approval_decisions``, DELETE on rewards, payouts and
  conversions, and any change of a reward's amount or currency. Corrections are
  reversing entries.

Amounts are integer minor units (``BigInteger``) beside a three-letter currency.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


EVENT_ID_CHARS = 128  # a provider's event id (Stripe, SendGrid)
KEY_CHARS = 255  # Stripe's longest idempotency key


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


def _money_checks() -> tuple[CheckConstraint, CheckConstraint]:
    return (
        CheckConstraint("length(currency) = 3", name="currency_iso"),
        CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
    )


class AccountRow(Base):
    __tablename__ = "accounts"
    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    domain: Mapped[str | None] = mapped_column(String(256))
    customer_since: Mapped[date | None] = mapped_column(Date)
    updated_at: Mapped[datetime]


class ContactRow(Base):
    __tablename__ = "contacts"
    contact_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String(128), index=True)
    name: Mapped[str] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(320))
    referrer_type: Mapped[str] = mapped_column(String(16))
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64))
    stripe_account_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint(
            "referrer_type in ('customer', 'partner', 'employee')", name="referrer_type"
        ),
    )


# The partial indexes' conditions; a query matches one only with the literals.
NPS_ANSWERS_WHERE = "type = 'nps_response'"
# The partial indexes' conditions on unrewarded conversions and pending payouts.
UNREWARDED_WHERE = "rewarded_at IS NULL"
PENDING_PAYOUTS_WHERE = "status = 'pending'"
PENDING_MOMENTS_WHERE = "status = 'new'"
UNCONVERTED_EVENTS_WHERE = "converted_at IS NULL AND referral_code IS NOT NULL"


class SourceEventRow(Base):
    """Every canonical event ever read, once per (source, event id)."""

    __tablename__ = "source_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(256))
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime]
    account_id: Mapped[str | None] = mapped_column(String(128))
    contact_id: Mapped[str | None] = mapped_column(String(128))
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    score: Mapped[int | None] = mapped_column(Integer)
    csat: Mapped[int | None] = mapped_column(Integer)
    priority: Mapped[str | None] = mapped_column(String(16))
    milestone: Mapped[str | None] = mapped_column(String(128))
    referral_code: Mapped[str | None] = mapped_column(String(64))
    deal_id: Mapped[str | None] = mapped_column(String(128))
    ticket_id: Mapped[str | None] = mapped_column(String(128))
    referee_email_domain: Mapped[str | None] = mapped_column(String(256))
    ingested_at: Mapped[datetime]
    # Stage markers: set once the stage has examined the event, so a crash between
    # ingest and a stage leaves the event for the next run instead of losing it.
    # Detection now keeps a watermark instead (the "__detection__" row of
    # source_cursors, see integrations/ledger/detection.py) and skips events that
    # carry a detected_at from before it.
    detected_at: Mapped[datetime | None]
    converted_at: Mapped[datetime | None]
    __table_args__ = (
        UniqueConstraint("source", "event_id"),
        Index("ix_source_events_undetected", "detected_at", "id"),
        Index("ix_source_events_ticket", "account_id", "ticket_id"),
        # A contact's NPS answers by time, for the detractor rule (migration 0020).
        # Queries must name the type as a literal (NPS_ANSWERS_WHERE) to use it.
        Index(
            "ix_source_events_nps_answers",
            "contact_id",
            "occurred_at",
            sqlite_where=text(NPS_ANSWERS_WHERE),
            postgresql_where=text(NPS_ANSWERS_WHERE),
        ),
        # The coded events not examined yet, for record-conversions (migration 0030a).
        Index(
            "ix_source_events_unconverted",
            "id",
            sqlite_where=text(UNCONVERTED_EVENTS_WHERE),
            postgresql_where=text(UNCONVERTED_EVENTS_WHERE),
        ),
    )


class SourceCursorRow(Base):
    __tablename__ = "source_cursors"
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    cursor: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]


class QuarantineRow(Base):
    """Input refused with its reason; nothing is dropped silently.

    ``raw`` is an excerpt (domain.quarantine.quarantine_excerpt: at most 500 characters,
    emails and phone numbers masked), emptied once the retention period has passed
    (``purged_at`` says when); the row itself, with its reason, is kept. Triggers
    (revision 0019) refuse DELETE and any UPDATE but that purge.
    """

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    record: Mapped[str] = mapped_column(String(512))
    field: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(512))
    raw: Mapped[str] = mapped_column(Text, default="")
    stage: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    purged_at: Mapped[datetime | None]
    __table_args__ = (
        UniqueConstraint("source", "record", "stage"),
        Index("ix_quarantine_created_at", "created_at"),
    )


class MomentRow(Base):
    __tablename__ = "moments"
    # The source event's key for moments detected since 0007; a UUID before.
    moment_id: Mapped[str] = mapped_column(String(330), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    contact_id: Mapped[str] = mapped_column(String(128), index=True)
    account_id: Mapped[str | None] = mapped_column(String(128))
    occurred_at: Mapped[datetime]
    source_event: Mapped[str] = mapped_column(String(330), unique=True)
    detail: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), default="new")
    skip_reason: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None]
    __table_args__ = (
        CheckConstraint("status = 'new' OR status = 'asked' OR status = 'skipped'", name="status"),
        # Only the moments waiting for a decision, in the order they are decided
        # (migration 0030a): closing one removes its entry, and the index is as
        # large as what waits, not as the history.
        Index(
            "ix_moments_pending",
            "occurred_at",
            "moment_id",
            sqlite_where=text(PENDING_MOMENTS_WHERE),
            postgresql_where=text(PENDING_MOMENTS_WHERE),
        ),
    )


class FollowUpRow(Base):
    """Detractors (NPS 0-6): never asked, listed for a person to follow up."""

    __tablename__ = "follow_ups"
    source_event: Mapped[str] = mapped_column(String(330), primary_key=True)
    contact_id: Mapped[str | None] = mapped_column(String(128))
    account_id: Mapped[str | None] = mapped_column(String(128))
    score: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime]


class ReferralCodeRow(Base):
    __tablename__ = "referral_codes"
    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime]


class AskRow(Base):
    __tablename__ = "asks"
    ask_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    moment_id: Mapped[str] = mapped_column(
        String(330), ForeignKey("moments.moment_id"), unique=True
    )
    contact_id: Mapped[str] = mapped_column(String(128), index=True)
    moment_type: Mapped[str] = mapped_column(String(32))
    referral_code: Mapped[str] = mapped_column(String(64), ForeignKey("referral_codes.code"))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    provider_ref: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    __table_args__ = (
        CheckConstraint(
            "status in ('queued', 'sending', 'accepted', 'failed', 'unknown')", name="status"
        ),
        # Paging queued asks by id is then a range scan, not a sort of the whole queue.
        Index("ix_asks_status", "status", "ask_id"),
        # A conversion's clicked asks are found by its code (touchpoints).
        Index("ix_asks_referral_code", "referral_code"),
    )


class EmailOutboxRow(Base):
    """The local outbox: where email goes when no SendGrid key is configured."""

    __tablename__ = "email_outbox"
    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    to_name: Mapped[str] = mapped_column(String(256))
    to_email: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(512))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class NotificationRow(Base):
    """Messages to referrers about their referrals and rewards, each sent once."""

    __tablename__ = "notifications"
    notification_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    reward_id: Mapped[str | None] = mapped_column(String(36))
    data: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="queued")
    provider_ref: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    __table_args__ = (
        CheckConstraint(
            "status in ('queued', 'sending', 'accepted', 'failed', 'unknown')", name="status"
        ),
        Index("ix_notifications_status", "status", "notification_id"),
    )


class SuppressionRow(Base):
    __tablename__ = "suppressions"
    contact_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class ConversionRow(Base):
    __tablename__ = "conversions"
    conversion_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_event: Mapped[str] = mapped_column(String(330), unique=True)
    referral_code: Mapped[str] = mapped_column(String(64), ForeignKey("referral_codes.code"))
    referrer_id: Mapped[str] = mapped_column(String(128), index=True)
    referee_account_id: Mapped[str | None] = mapped_column(String(128))
    referee_contact_id: Mapped[str | None] = mapped_column(String(128))
    referee_email_domain: Mapped[str | None] = mapped_column(String(256))
    milestone: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime]
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    created_at: Mapped[datetime]
    rewarded_at: Mapped[datetime | None]
    # Stripe's opaque fingerprint of the card that paid, when known (fraud checks).
    card_fingerprint: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (
        CheckConstraint("milestone in ('lead', 'qualified', 'customer')", name="milestone"),
        CheckConstraint("amount_minor is null or amount_minor >= 0", name="amount_not_negative"),
        # Finding a referee's earlier conversions, and the unrewarded ones in order, is
        # then a lookup: without these, recording conversions grew with their square.
        Index("ix_conversions_referee_account", "referee_account_id"),
        Index("ix_conversions_referee_contact", "referee_contact_id"),
        # Partial (revision 0029): a rewarded conversion leaves it. Keyed by rewarded_at,
        # SQLite chose it for "these ids, still unrewarded" over the primary key, and
        # read every unrewarded conversion for each batch of ids.
        Index(
            "ix_conversions_to_reward",
            "occurred_at",
            "conversion_id",
            sqlite_where=text(UNREWARDED_WHERE),
            postgresql_where=text(UNREWARDED_WHERE),
        ),
    )


class ConversionPaymentRow(Base):
    """A provider payment behind a conversion (a Stripe charge, payment intent or
    invoice), so a refund or chargeback of that payment finds the rewards it affects."""

    __tablename__ = "conversion_payments"
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    payment_ref: Mapped[str] = mapped_column(String(128), primary_key=True)
    conversion_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("conversions.conversion_id"), index=True
    )
    customer_ref: Mapped[str | None] = mapped_column(String(128), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime]
    __table_args__ = (
        CheckConstraint("amount_minor >= 0", name="amount_not_negative"),
        CheckConstraint("length(currency) = 3", name="currency_iso"),
    )


class RewardRow(Base):
    __tablename__ = "rewards"
    reward_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    conversion_id: Mapped[str] = mapped_column(String(36), ForeignKey("conversions.conversion_id"))
    rule_id: Mapped[str] = mapped_column(String(64))
    referrer_id: Mapped[str] = mapped_column(String(128), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    milestone: Mapped[str] = mapped_column(String(16))
    attribution_model: Mapped[str] = mapped_column(String(32))
    explanation: Mapped[str] = mapped_column(String(512))
    flags: Mapped[str] = mapped_column(String(512), default="")
    payable_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(24))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    __table_args__ = (
        UniqueConstraint("conversion_id", "rule_id", "referrer_id"),
        *_money_checks(),
        CheckConstraint(
            "status in ('holding', 'payable', 'awaiting_approval', 'approved', 'rejected',"
            " 'paid', 'cancelled')",
            name="status",
        ),
        Index("ix_rewards_status", "status", "payable_at"),
    )


class ApprovalRequestRow(Base):
    """A paused payout-approval flow run waiting on a person, per reward and attempt."""

    __tablename__ = "approval_requests"
    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reward_id: Mapped[str] = mapped_column(String(36), ForeignKey("rewards.reward_id"))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    created_at: Mapped[datetime]
    reminded_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    __table_args__ = (
        UniqueConstraint("reward_id", "attempt"),
        CheckConstraint("status in ('waiting', 'decided', 'expired')", name="status"),
        # At most one request waits for a reward at a time.
        Index(
            "uq_approval_requests_waiting_reward",
            "reward_id",
            unique=True,
            sqlite_where=text("status = 'waiting'"),
            postgresql_where=text("status = 'waiting'"),
        ),
    )


class ApprovalDecisionRow(Base):
    __tablename__ = "approval_decisions"
    decision_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reward_id: Mapped[str] = mapped_column(String(36), ForeignKey("rewards.reward_id"))
    stage: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(8))
    approver: Mapped[str] = mapped_column(String(256))
    # The registered approver (revision 0018); None on decisions recorded before the
    # registry, which named their approver by a typed name only.
    approver_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime]
    __table_args__ = (
        UniqueConstraint("reward_id", "stage"),
        CheckConstraint("decision in ('approve', 'reject')", name="decision"),
        CheckConstraint("stage in (1, 2)", name="stage"),
        *_money_checks(),
    )


class PayoutRow(Base):
    """The payment outbox: written, with its idempotency key, before the provider call."""

    __tablename__ = "payouts"
    payout_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reward_id: Mapped[str] = mapped_column(String(36), ForeignKey("rewards.reward_id"))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    rail: Mapped[str] = mapped_column(String(32))
    destination: Mapped[str | None] = mapped_column(String(64))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    provider_ref: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(String(512))
    tries: Mapped[int] = mapped_column(Integer, default=0)
    # A lease, not a lock: the worker sending this payout, and until when. Another
    # worker leaves it alone until the lease runs out (a crashed worker's lease does).
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    __table_args__ = (
        UniqueConstraint("reward_id", "attempt"),
        CheckConstraint("status in ('pending', 'succeeded', 'failed')", name="status"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("length(currency) = 3", name="currency_iso"),
        # One live payout per reward: a new attempt only after a failure for good.
        Index(
            "uq_payouts_live_reward",
            "reward_id",
            unique=True,
            sqlite_where=text("status != 'failed'"),
            postgresql_where=text("status != 'failed'"),
        ),
        # Partial (revision 0029): the pending payouts in order, for the calls that
        # take over what a crash left. Keyed by status, SQLite chose it for "these
        # payouts, still pending" over the primary key, and read every pending payout
        # for each chunk. Queries that use it name the status as a literal
        # (PENDING_PAYOUTS_WHERE).
        Index(
            "ix_payouts_pending",
            "created_at",
            "payout_id",
            sqlite_where=text(PENDING_PAYOUTS_WHERE),
            postgresql_where=text(PENDING_PAYOUTS_WHERE),
        ),
    )


class LedgerEntryRow(Base):
    """Append-only money movements per reward; the balance is their sum.

    kinds: ``accrued`` (+reward), ``adjusted`` (-reduction at approval), ``cancelled``
    (-what was left when rejected or clawed back before payout), ``paid`` (-payout),
    ``clawed_back`` (-what a refund takes back after payout: the referrer owes it),
    ``reversed`` (+what was recovered at the provider), ``netted`` (+/-: a debt settled
    out of another reward's payout).
    """

    __tablename__ = "ledger_entries"
    entry_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True
    )
    reward_id: Mapped[str] = mapped_column(String(36), ForeignKey("rewards.reward_id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    ref: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    __table_args__ = (
        UniqueConstraint("reward_id", "kind", "ref"),
        CheckConstraint(
            "kind in ('accrued', 'adjusted', 'cancelled', 'paid', 'reversed', 'clawed_back',"
            " 'netted')",
            name="kind",
        ),
        CheckConstraint("length(currency) = 3", name="currency_iso"),
        Index("ix_ledger_entries_reward", "reward_id"),
    )


class ProviderEventRow(Base):
    """Webhook events applied, once each per provider event id."""

    __tablename__ = "provider_events"
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]


# Tables whose rows are never deleted, and those never updated at all.
NO_DELETE = (
    "rewards",
    "payouts",
    "conversions",
    "ledger_entries",
    "approval_decisions",
    "provider_events",
    "conversion_payments",
)
NO_UPDATE = ("ledger_entries", "approval_decisions", "provider_events")


# One name per table, for SQLAlchemy Core statements.
T_ACCOUNTS: Table = AccountRow.__table__  # type: ignore[assignment]
T_CONTACTS: Table = ContactRow.__table__  # type: ignore[assignment]
T_SOURCE_EVENTS: Table = SourceEventRow.__table__  # type: ignore[assignment]
T_SOURCE_CURSORS: Table = SourceCursorRow.__table__  # type: ignore[assignment]
T_QUARANTINE: Table = QuarantineRow.__table__  # type: ignore[assignment]
T_MOMENTS: Table = MomentRow.__table__  # type: ignore[assignment]
T_FOLLOW_UPS: Table = FollowUpRow.__table__  # type: ignore[assignment]
T_REFERRAL_CODES: Table = ReferralCodeRow.__table__  # type: ignore[assignment]
T_ASKS: Table = AskRow.__table__  # type: ignore[assignment]
T_EMAIL_OUTBOX: Table = EmailOutboxRow.__table__  # type: ignore[assignment]
T_NOTIFICATIONS: Table = NotificationRow.__table__  # type: ignore[assignment]
T_SUPPRESSIONS: Table = SuppressionRow.__table__  # type: ignore[assignment]
T_CONVERSIONS: Table = ConversionRow.__table__  # type: ignore[assignment]
T_CONVERSION_PAYMENTS: Table = ConversionPaymentRow.__table__  # type: ignore[assignment]
T_REWARDS: Table = RewardRow.__table__  # type: ignore[assignment]
T_APPROVAL_REQUESTS: Table = ApprovalRequestRow.__table__  # type: ignore[assignment]
T_APPROVAL_DECISIONS: Table = ApprovalDecisionRow.__table__  # type: ignore[assignment]
T_PAYOUTS: Table = PayoutRow.__table__  # type: ignore[assignment]
T_LEDGER_ENTRIES: Table = LedgerEntryRow.__table__  # type: ignore[assignment]
T_PROVIDER_EVENTS: Table = ProviderEventRow.__table__  # type: ignore[assignment]

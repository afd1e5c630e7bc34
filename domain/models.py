"""Frozen value objects of the referral cycle.

Identifiers are strings. Ids the program mints itself are derived from the natural key
of the thing, so the same input always yields the same id: a re-run, or a ledger rebuilt
from the same input, lands on the same rows and the same Stripe idempotency keys instead
of new ones. A moment's id is its event's key (``<source>:<event_id>``: one moment per
event, and the database can compute it while detecting); asks, conversions, rewards and
payouts get UUIDv5 ids from :func:`derived_id`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from domain.money import Money

# Fixed forever: changing it would change every derived id and idempotency key.
ID_NAMESPACE = uuid.UUID("6f1d3c52-9b1e-4a57-9f0e-2c4a8e7b5d10")


def derived_id(kind: str, *parts: str) -> str:
    """A stable id for ``kind`` from its natural key ``parts``."""
    return str(uuid.uuid5(ID_NAMESPACE, "\x1f".join((kind, *parts))))


class ReferrerType(StrEnum):
    CUSTOMER = "customer"
    PARTNER = "partner"
    EMPLOYEE = "employee"


class EventType(StrEnum):
    """The canonical CRM/NPS event types every source is mapped to."""

    DEAL_WON = "deal_won"
    RENEWAL = "renewal"
    NPS_RESPONSE = "nps_response"
    TICKET_OPENED = "ticket_opened"
    TICKET_RESOLVED = "ticket_resolved"
    USAGE_MILESTONE = "usage_milestone"
    SIGNUP = "signup"
    DEAL_QUALIFIED = "deal_qualified"


class MomentType(StrEnum):
    """The five referral-worthy moments."""

    DEAL_WON = "deal_won"
    RENEWAL = "renewal"
    NPS_PROMOTER = "nps_promoter"
    SUPPORT_RESOLVED = "support_resolved"
    USAGE_MILESTONE = "usage_milestone"


class Milestone(StrEnum):
    """How far a referred lead has come; each may carry its own reward."""

    LEAD = "lead"
    QUALIFIED = "qualified"
    CUSTOMER = "customer"


class SkipReason(StrEnum):
    """Why a moment did not lead to an ask; shown to operators as counts."""

    OPTED_OUT = "opted_out"
    SUPPRESSED = "suppressed"
    NO_EMAIL = "no_email"
    COOLDOWN = "cooldown"
    ANOTHER_MOMENT_THIS_RUN = "another_moment_this_run"
    OPEN_HIGH_PRIORITY_TICKET = "open_high_priority_ticket"
    TENURE_TOO_SHORT = "tenure_too_short"
    MOMENT_TOO_OLD = "moment_too_old"
    UNKNOWN_CONTACT = "unknown_contact"
    MOMENT_DISABLED = "moment_disabled"
    RECENT_DETRACTOR = "recent_detractor"


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    name: str
    domain: str | None = None
    customer_since: date | None = None


@dataclass(frozen=True, slots=True)
class Contact:
    """A person who may refer, be asked, or be referred.

    ``email`` is personal data: it goes to the email provider and nowhere else (never
    into logs, artifacts or payment metadata).
    """

    contact_id: str
    account_id: str | None
    name: str
    email: str | None
    referrer_type: ReferrerType = ReferrerType.CUSTOMER
    opted_out: bool = False
    stripe_customer_id: str | None = None
    stripe_account_id: str | None = None

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.strip() else "there"


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """One CRM or NPS event, already parsed and validated by its source."""

    source: str
    event_id: str
    type: EventType
    occurred_at: datetime
    account_id: str | None = None
    contact_id: str | None = None
    amount: Money | None = None
    score: int | None = None
    csat: int | None = None
    priority: str | None = None
    milestone: str | None = None
    referral_code: str | None = None
    deal_id: str | None = None
    ticket_id: str | None = None
    referee_email_domain: str | None = None

    @property
    def key(self) -> str:
        return f"{self.source}:{self.event_id}"


@dataclass(frozen=True, slots=True)
class Moment:
    moment_id: str
    type: MomentType
    contact_id: str
    account_id: str | None
    occurred_at: datetime
    source_event: str
    detail: str

    @classmethod
    def from_event(
        cls, type_: MomentType, event: SourceEvent, contact_id: str, detail: str
    ) -> Moment:
        """The moment ``event`` is. Its id is the event's key (``<source>:<event_id>``):
        as stable as a derived UUID (one moment per event, the same id on every run),
        and the ledger can write it with plain SQL, with no per-row hash to compute."""
        return cls(
            moment_id=event.key,
            type=type_,
            contact_id=contact_id,
            account_id=event.account_id,
            occurred_at=event.occurred_at,
            source_event=event.key,
            detail=detail,
        )


@dataclass(frozen=True, slots=True)
class NpsAnswer:
    """One NPS score a contact gave, and when (the event's ``occurred_at``)."""

    score: int
    answered_at: datetime


@dataclass(frozen=True, slots=True)
class ContactHistory:
    """What eligibility needs to know about a contact beyond the contact itself.

    ``nps_answers`` holds the contact's NPS answers up to the decision's ``as_of``, at
    least those inside the detractor window (older ones may be left out: they no longer
    count); :func:`domain.eligibility.latest_nps_answer` picks the one that counts.
    """

    last_asked_at: datetime | None = None
    suppressed: bool = False
    open_high_priority_tickets: int = 0
    customer_since: date | None = None
    nps_answers: tuple[NpsAnswer, ...] = ()


@dataclass(frozen=True, slots=True)
class AskDecision:
    moment: Moment
    reason: SkipReason | None = None

    @property
    def ask(self) -> bool:
        return self.reason is None


@dataclass(frozen=True, slots=True)
class Ask:
    ask_id: str
    moment_id: str
    contact_id: str
    referral_code: str
    moment_type: MomentType

    @classmethod
    def for_moment(cls, moment: Moment, referral_code: str) -> Ask:
        return cls(
            ask_id=derived_id("ask", moment.moment_id),
            moment_id=moment.moment_id,
            contact_id=moment.contact_id,
            referral_code=referral_code,
            moment_type=moment.type,
        )


@dataclass(frozen=True, slots=True)
class Conversion:
    """A referred lead reaching a milestone, attributed to the code's owner."""

    conversion_id: str
    source_event: str
    referral_code: str
    referrer_id: str
    referee_account_id: str | None
    referee_contact_id: str | None
    milestone: Milestone
    occurred_at: datetime
    amount: Money | None
    referee_email_domain: str | None = None
    # Stripe's fingerprint of the card that paid, when the event carried it: an opaque
    # hash of the card number, for the same-card self-referral check.
    card_fingerprint: str | None = None


class RewardStatus(StrEnum):
    HOLDING = "holding"
    PAYABLE = "payable"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    PAID = "paid"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Reward:
    reward_id: str
    conversion_id: str
    rule_id: str
    referrer_id: str
    amount: Money
    milestone: Milestone
    attribution_model: str
    payable_at: datetime
    explanation: str
    flags: tuple[str, ...] = ()

    @classmethod
    def derive_id(cls, conversion_id: str, rule_id: str, referrer_id: str) -> str:
        return derived_id("reward", conversion_id, rule_id, referrer_id)


class Route(StrEnum):
    HOLD = "hold"
    AUTO_PAY = "auto_pay"
    APPROVAL = "approval"


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class PayoutRailKind(StrEnum):
    LEDGER_ONLY = "ledger_only"
    STRIPE_TRANSFER = "stripe_transfer"
    STRIPE_BALANCE = "stripe_balance"


#: Attempts at paying one reward: after this many payouts failed for good (a closed
#: account, a refused transfer), no further payout is started for it, rather than one
#: more on every cycle. Each attempt has its own idempotency key (``key_for``).
MAX_PAYOUT_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class PayoutInstruction:
    """What a payment rail needs to move one reward's money, exactly once."""

    payout_id: str
    reward_id: str
    amount: Money
    rail: PayoutRailKind
    idempotency_key: str
    destination: str | None = None
    # When the key was stored: past the provider's key lifetime (24 h at Stripe) the
    # rail must look for an existing payment before creating one.
    key_created_at: datetime | None = None
    attempt: int = 1

    @classmethod
    def key_for(cls, reward_id: str, rail: PayoutRailKind, attempt: int = 1) -> str:
        """The idempotency key of a payout attempt, e.g. ``reward:<id>:transfer``.

        A new attempt (after a payout failed for good) gets its own key, suffixed with
        its number, so the provider does not replay the saved failure.
        """
        suffix = {
            PayoutRailKind.LEDGER_ONLY: "ledger",
            PayoutRailKind.STRIPE_TRANSFER: "transfer",
            PayoutRailKind.STRIPE_BALANCE: "credit",
        }[rail]
        key = f"reward:{reward_id}:{suffix}"
        return key if attempt == 1 else f"{key}:{attempt}"


class PayoutOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    RETRYABLE = "retryable"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PayoutResult:
    payout_id: str
    outcome: PayoutOutcome
    provider_ref: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class EmailMessage:
    """One email to one person; ``message_id`` is our opaque id, the only thing the
    provider gets back in its events (custom_args)."""

    message_id: str
    kind: str
    to_email: str
    to_name: str
    subject: str
    template: str
    data: dict[str, str] = field(default_factory=dict)


class EmailOutcome(StrEnum):
    ACCEPTED = "accepted"
    RETRYABLE = "retryable"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class EmailResult:
    message_id: str
    outcome: EmailOutcome
    provider_ref: str | None = None
    error: str | None = None


class EmailEventType(StrEnum):
    """The email provider's event types this system uses (SendGrid's Event Webhook)."""

    DELIVERED = "delivered"
    BOUNCE = "bounce"
    DROPPED = "dropped"
    SPAMREPORT = "spamreport"
    UNSUBSCRIBE = "unsubscribe"
    GROUP_UNSUBSCRIBE = "group_unsubscribe"
    CLICK = "click"
    OPEN = "open"
    DEFERRED = "deferred"


@dataclass(frozen=True, slots=True)
class EmailEvent:
    """One thing that happened to one of our emails, as SendGrid reported it.

    Attributes:
        event_id: SendGrid's ``sg_event_id``, unique per event: the dedup key.
        type: what happened.
        message_id: our message id, from the ``message_id`` custom arg.
        occurred_at: when it happened (aware, UTC).
        reason: SendGrid's explanation, for bounces (``"bounce: ..."`` for a hard
            bounce, ``"blocked: ..."`` for a block), drops and deferrals, and the
            unsubscribe group of a ``group_unsubscribe``; addresses in it are redacted.
    """

    event_id: str
    type: EmailEventType
    message_id: str
    occurred_at: datetime
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class EmailEventsApplied:
    """What one batch of SendGrid events did to the ledger.

    Attributes:
        received: events handed in (after dropping repeats within the batch).
        new: events stored and applied for the first time.
        duplicates: events the ledger already had; nothing was done with them.
        unknown_messages: new events whose message id no ask or notification has;
            they are kept, and suppress nobody.
        rejected: items refused (by the parser, or by the ledger for ids too long to
            store), kept in the quarantine with their reason.
        suppressed: contacts suppressed by this batch and not before, by contact id.
    """

    received: int
    new: int
    duplicates: int
    unknown_messages: int
    rejected: int
    suppressed: tuple[str, ...] = field(default=())

    def counts(self) -> dict[str, int]:
        """The numbers only: safe to log and to answer with (no ids, no addresses)."""
        return {
            "received": self.received,
            "new": self.new,
            "duplicates": self.duplicates,
            "unknown_messages": self.unknown_messages,
            "rejected": self.rejected,
            "suppressed": len(self.suppressed),
        }


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input record refused by a source, with where it came from and why."""

    source: str
    record: str
    field: str | None
    reason: str
    raw: str = ""


@dataclass(frozen=True, slots=True)
class IngestReport:
    """What one read of a source did: records in = events + quarantined + reference."""

    source: str
    records_in: int
    new_events: int
    already_seen: int
    quarantined: int
    reference_rows: int

    @property
    def balanced(self) -> bool:
        return (
            self.records_in
            == self.new_events + self.already_seen + self.quarantined + self.reference_rows
        )

    def plus(self, other: IngestReport) -> IngestReport:
        """The two reads of one source counted as one (the pages of a paged read)."""
        if other.source != self.source:
            raise ValueError(f"cannot add {other.source}'s report to {self.source}'s")
        return IngestReport(
            source=self.source,
            records_in=self.records_in + other.records_in,
            new_events=self.new_events + other.new_events,
            already_seen=self.already_seen + other.already_seen,
            quarantined=self.quarantined + other.quarantined,
            reference_rows=self.reference_rows + other.reference_rows,
        )


@dataclass(frozen=True, slots=True)
class RewardView:
    """A reward with its current status and owed balance (sum of its ledger entries)."""

    reward: Reward
    status: RewardStatus
    balance: Money


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    stage: int
    decision: Decision
    approver: str
    reason: str
    amount: Money
    decided_at: datetime
    # The registered approver; None on decisions recorded before the registry.
    approver_id: str | None = None


@dataclass(frozen=True, slots=True)
class ApprovalView:
    """Everything an approver needs to decide on one reward."""

    reward: RewardView
    referrer: Contact
    referee_account: str | None
    referee_contact: str | None
    conversion_amount: Money | None
    decisions: tuple[DecisionRecord, ...]
    referrer_paid_count: int
    referrer_paid_total: Money
    referrer_rewards_count: int
    # The referee's account id (``referee_account`` is its name, for people to read).
    referee_account_id: str | None = None


@dataclass(frozen=True, slots=True)
class WaitingApproval:
    reward_id: str
    referrer_id: str
    referrer_name: str
    amount: Money
    flags: tuple[str, ...]
    flow_run_id: str | None
    waiting_since: datetime
    stages_done: int

"""The ports: what the referral cycle needs from the outside world.

Each outside system has one Protocol here, one real adapter and one recording fake in
``integrations/``. Tasks receive adapters as parameters, typed by these Protocols.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from domain.approvers import Approver, CodeCheck, Identity
from domain.connect import AccountLink, AccountState
from domain.discounts import (
    CouponInstruction,
    DiscountRail,
    DiscountResult,
    PromotionCodeInstruction,
)
from domain.models import (
    Account,
    Contact,
    EmailMessage,
    EmailResult,
    Milestone,
    PayoutInstruction,
    PayoutRailKind,
    PayoutResult,
    Rejected,
    SourceEvent,
)
from domain.money import Money


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """What one read of a source produced.

    ``records_in`` counts every input record read; the invariant the ingest checks is
    ``records_in == len(events) + len(rejected) + len(reference_only)`` (contacts and
    accounts rows are counted in ``reference_only``).

    ``origins`` names where a row was read (``events.csv:17``) by its key
    (:func:`origin_key`), when the source knows: a row the ledger then refuses to
    store is quarantined under that name.
    """

    source: str
    accounts: Sequence[Account] = ()
    contacts: Sequence[Contact] = ()
    events: Sequence[SourceEvent] = ()
    rejected: Sequence[Rejected] = ()
    records_in: int = 0
    reference_only: int = 0
    cursor: str | None = None
    origins: Mapping[str, str] = field(default_factory=dict)


def origin_key(row: Account | Contact | SourceEvent) -> str:
    """The key of ``row`` in :attr:`SourceBatch.origins`: its kind and its id."""
    if isinstance(row, Account):
        return f"account:{row.account_id}"
    if isinstance(row, Contact):
        return f"contact:{row.contact_id}"
    return f"event:{row.event_id}"


@runtime_checkable
class EventSource(Protocol):
    """A CRM or NPS system read incrementally from a stored cursor."""

    name: str

    def fetch(self, cursor: str | None) -> SourceBatch:
        """Everything new since ``cursor`` (everything when ``None``), with the next cursor."""
        ...


@runtime_checkable
class PagedEventSource(EventSource, Protocol):
    """A source whose one read can be too large to hold at once (a file drop of a
    million customers), delivered a page at a time.

    The pages together are what :meth:`fetch` returns. Only the last page carries the
    next cursor, so pages stored one after another move the cursor only once all of
    them are stored: a read cut short is read again, and the events already stored are
    ignored by id.
    """

    def pages(self, cursor: str | None, page_records: int) -> Iterator[SourceBatch]:
        """What :meth:`fetch` returns, in pages of about ``page_records`` records.

        Every page satisfies :class:`SourceBatch`'s count invariant on its own; the
        last one (there is always one) carries the cursor.
        """
        ...


@dataclass(frozen=True, slots=True)
class ClaimRow:
    """A partner's registration of a company as a source read it, not yet checked
    (:func:`domain.registration.parse_claim` does, naming the wrong field).

    Attributes:
        record: where it was read (``registrations.csv:4``, ``hubspot:company:123``).
        partner_id: the registering partner's contact id.
        domain: the registered company's domain.
        contact: the lead's CRM contact id, or an email address (stored only as a
            keyed hash).
        evidence: the qualification (a meeting booked, a discovery call, ...).
        registered_at: when the partner made the claim: a claim read again is the
            same registration.
    """

    record: str
    partner_id: str | None
    domain: str | None
    contact: str | None
    evidence: str | None
    registered_at: datetime | None


@dataclass(frozen=True, slots=True)
class ClaimsRead:
    """What one read of a source's partner registrations produced: the claims, the
    rows refused before they could be claims (never with their raw text: it may hold
    an address), and the next cursor."""

    source: str
    claims: Sequence[ClaimRow] = ()
    rejected: Sequence[Rejected] = ()
    cursor: str | None = None


@runtime_checkable
class RegistrationSource(Protocol):
    """A source that also holds partner deal registrations (a file drop, a CRM
    property), read incrementally from a cursor of their own."""

    name: str

    def fetch_registrations(self, cursor: str | None) -> ClaimsRead:
        """The registrations new or changed since ``cursor`` (all when ``None``)."""
        ...


@runtime_checkable
class EmailSender(Protocol):
    """Sends personalized emails; one result per message, in any order."""

    name: str

    def send(self, messages: Sequence[EmailMessage]) -> list[EmailResult]: ...


@runtime_checkable
class PaymentRail(Protocol):
    """Moves money for rewards; every call carries the instruction's idempotency key.

    ``pay`` returns one result per instruction. A result is ``RETRYABLE`` when the
    outcome is unknown or transient (the same key is used next time), ``FAILED`` only
    when the provider refused for good.
    """

    kind: PayoutRailKind

    def pay(self, instructions: Sequence[PayoutInstruction]) -> list[PayoutResult]: ...


@runtime_checkable
class PaymentCards(Protocol):
    """Reads, from the payment provider, which card paid a payment (the same-card check).

    Only the provider's opaque card fingerprint comes back: never a card number, its
    last digits or its expiry.
    """

    def card_fingerprint(self, payment_ref: str) -> str | None:
        """The fingerprint of the card that paid ``payment_ref`` (a charge id, or a
        payment intent id whose latest charge is the payment).

        Returns:
            The fingerprint; ``None`` when it was no card payment, nothing was charged
            yet, or the provider knows no such payment.

        Raises:
            domain.errors.RetryableIntegrationError: the provider cannot be read now.
            domain.errors.PermanentIntegrationError: the provider refused the read.
        """
        ...


@runtime_checkable
class ApprovalRuns(Protocol):
    """Where a person decides on a reward: a paused Prefect flow run per reward."""

    def start(
        self, requests: Mapping[str, str], names: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Start one waiting run per approval request (request id -> reward id), named
        by ``names`` (request id -> run name: the amount, never an email).

        Starting the same request again returns the run already started for it (the
        request id is the run's idempotency key). Returns request id -> run id.
        """
        ...

    def resume(self, run_id: str, decision: Mapping[str, object]) -> None:
        """Resume a waiting run with a typed decision.

        Raises:
            domain.errors.PermanentIntegrationError: the run is not waiting, or the
                decision does not match the form.
        """
        ...

    def cancel_waiting(self, run_id: str, reason: str) -> bool:
        """Cancel the run if it still waits for a decision; False if it was resumed
        (or finished) meanwhile, in which case it must be left to finish."""
        ...

    def resumable(self, run_ids: list[str]) -> set[str]:
        """The runs among ``run_ids`` that wait suspended, ready for a decision."""
        ...

    def ui_url(self, run_id: str) -> str: ...


class ApproverRegistry(Protocol):
    """The registered approvers, as the approval use case reads them."""

    def get(self, approver_id: str) -> Approver | None: ...

    def identities(
        self, approver: Approver, parties: Mapping[str, str | None]
    ) -> tuple[Identity, dict[str, Identity]]:
        """The approver's identity and each party's (role -> CRM contact id)."""
        ...

    def record_refusal(
        self,
        attempt_id: str,
        reward_id: str,
        claimed_approver_id: str,
        reason: str,
        wrong_code: bool,
        flow_run_id: str | None,
        now: datetime,
    ) -> None: ...

    def wrong_codes_since(self, approver_id: str, since: datetime) -> int: ...

    def refusal(self, attempt_id: str) -> str | None:
        """The reason an attempt was refused, if it was."""
        ...


class OneTimeCodes(Protocol):
    """Proof that the approver is who the form says: an RFC 6238 code, spent once."""

    def verify(self, approver_id: str, code: str, now: datetime) -> CodeCheck:
        """Check the code and, if it is good, spend it."""
        ...

    def check(self, approver_id: str, code: str, now: datetime) -> CodeCheck:
        """Check the code without spending it."""
        ...


@runtime_checkable
class RefereeDiscounts(Protocol):
    """Publishes the referee's discount: the program's coupon, and one promotion code
    per referral code. Every call carries the idempotency key stored in the ledger.

    Results are as a payment rail's: ``RETRYABLE`` when the outcome is unknown or
    transient (the same key is sent next time), ``FAILED`` only when refused for good.
    Metadata sent to the provider holds opaque ids only (the referral code), never a
    name or an address.
    """

    rail: DiscountRail

    def create_coupon(self, coupon: CouponInstruction) -> DiscountResult: ...

    def create_promotion_codes(
        self, codes: Sequence[PromotionCodeInstruction]
    ) -> list[DiscountResult]: ...


@runtime_checkable
class RewardHistory(Protocol):
    """What reward rules need to know of the rewards already recorded: the referrer's
    successful referrals (for tiers) and what rewards have earned (for caps).

    The ledger answers under its per-referrer lock, so two runs cannot both use the
    same room under a cap; :class:`domain.rewards.RewardBook` adds what a run computes.
    """

    def referrals(
        self, referrer_id: str, milestone: Milestone, start: datetime, end: datetime
    ) -> Sequence[tuple[datetime, str]]:
        """(occurred at, conversion id) of each conversion at ``milestone`` in
        [start, end) that earned ``referrer_id`` a reward not rejected or cancelled."""
        ...

    def earned(self, referrer_id: str | None, start: datetime, end: datetime) -> Money:
        """What rewards earned in [start, end) add up to after cancellations, for one
        referrer or (``None``) for the whole program, in the program currency."""
        ...


@runtime_checkable
class ConnectOnboarding(Protocol):
    """Onboards a referrer to a connected account they can be paid to (Stripe Connect
    Express): creates the account, hands out links to the provider's hosted onboarding,
    and reads the account's state back.

    Metadata sent to the provider holds the referrer's contact id only: never the page
    token, an address or a name. Failures raise
    :class:`~domain.errors.RetryableIntegrationError` (unknown or transient: the same
    key is sent next time) or :class:`~domain.errors.PermanentIntegrationError`.
    """

    def create_account(self, referrer_id: str, idempotency_key: str) -> str:
        """Create the referrer's account with ``idempotency_key`` (stored beforehand);
        the same key answers the same account. Returns its id (``acct_...``)."""
        ...

    def create_link(self, account_id: str, return_url: str, refresh_url: str) -> AccountLink:
        """A fresh single-use onboarding link (``account_onboarding``) for the account."""
        ...

    def retrieve(self, account_id: str) -> AccountState:
        """The account's state as the provider has it now."""
        ...

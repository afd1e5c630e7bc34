"""Where a new conversion goes: one conversion per referral (pure: no I/O).

Conversions come from the CRM (coded events, and events credited through a partner's
registration) and from Stripe (payments and trials). One rule places them all, so
that one referral is never rewarded twice:

**One conversion per (referee, milestone).** The referee is the conversion's CRM
account, else its CRM contact, else (for Stripe) its Stripe customer; a Stripe
customer that a CRM contact names is that contact's account. Before a conversion is
inserted, the ledger is asked for one already recorded:

1. the same *payment* (any of its Stripe ids already owned by a conversion at the same
   milestone): the ids it lacks are added to it (**joined**), or it had them all
   (**duplicate**); nothing else happens. This is how a webhook and a polling
   delivery, or a Checkout Session and its invoice, become one conversion;
2. the same *referee and milestone* with the same code: a **duplicate**. A CRM
   conversion is not recorded again, nor is a later payment (a renewal) of a
   converted referee; but a Stripe first payment at the customer milestone of a
   conversion the CRM recorded (which has no Stripe payment yet) adds its ids to it
   (**join**), so a refund of it finds the reward;
3. the same referee and milestone with *another* code: **refused** (quarantined),
   naming the conversion already recorded; a person decides.

Otherwise the conversion is **inserted**. Placement is order-dependent: within a batch,
each conversion is placed after the ones before it, and sees them.

The use case :func:`tasks.use_cases.conversions.place_conversion` applies these rules
in one unit of work under the conversions lock, on a :class:`PlacementBook`: what the
ledger knows of the batch's referees and payments, read once for the whole batch
(:class:`PlacementFacts`), plus what the batch has placed so far. The book answers each
step as the ledger would have answered it one conversion at a time, and collects the
conversions and payment ids to write, so a batch costs a few statements, not a few per
conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from domain.models import Conversion, Milestone, Rejected
from domain.stripe_conversions import StripeConversion


class Placement(StrEnum):
    """What becomes of a conversion whose payment no conversion owns yet."""

    INSERT = "insert"
    JOIN = "join"
    DUPLICATE = "duplicate"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class EarlierConversion:
    """The earliest conversion of the same referee at the same milestone.

    Attributes:
        conversion_id: its id.
        referral_code: the code it was made with.
        has_stripe: whether a Stripe payment is already linked to it.
    """

    conversion_id: str
    referral_code: str
    has_stripe: bool


@dataclass(slots=True)
class ConversionTally:
    """What one batch of conversions came to: new ids, joined, duplicates, rejected.

    ``touching`` lists the new conversions with their Stripe customer: their touches
    are stored for the whole batch at once, right after it is placed.
    """

    new: list[str] = field(default_factory=list)
    joined: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    touching: list[tuple[Conversion, str | None]] = field(default_factory=list)


def placement(
    conversion: Conversion, stripe: StripeConversion | None, earlier: EarlierConversion | None
) -> Placement:
    """Rules 2 and 3 of the module: insert, join the earlier conversion, drop, or refuse.

    Args:
        conversion: the conversion to place.
        stripe: the Stripe payment behind it, for a Stripe conversion.
        earlier: the earliest conversion of the same referee and milestone, if any.
    """
    if earlier is None:
        return Placement.INSERT
    if earlier.referral_code != conversion.referral_code:
        return Placement.REFUSE
    if (
        stripe is not None
        and not earlier.has_stripe
        and stripe.first_payment
        and conversion.milestone is Milestone.CUSTOMER
    ):
        return Placement.JOIN
    return Placement.DUPLICATE


def refusal(conversion: Conversion, earlier: EarlierConversion) -> Rejected:
    """The quarantine row of a referee already converted under another code."""
    return Rejected(
        conversion.source_event.split(":", 1)[0],
        conversion.source_event,
        "referral_code",
        f"referee already converted at milestone {conversion.milestone.value} "
        f"through another referral code (conversion {earlier.conversion_id})",
    )


# -- a batch placed in memory -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KnownConversion:
    """A conversion the ledger holds, as placement sees it.

    Attributes:
        conversion_id: its id.
        source_event: the event it was made from (unique, as its id is).
        referral_code: the code it was made with.
        milestone: its milestone.
        referee_account_id: the referee's CRM account, if known.
        referee_contact_id: the referee's CRM contact, if known.
        created_at: when it was recorded ("earliest" orders by this, then by id).
    """

    conversion_id: str
    source_event: str
    referral_code: str
    milestone: Milestone
    referee_account_id: str | None
    referee_contact_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KnownPayment:
    """A Stripe id the ledger links to a conversion.

    Attributes:
        payment_ref: the Stripe id.
        conversion_id: the conversion owning it.
        customer: the Stripe customer the payment came from, if any.
        created_at: when it was linked.
    """

    payment_ref: str
    conversion_id: str
    customer: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PlacementFacts:
    """What the ledger knows that placing one batch can depend on.

    ``conversions``: every conversion of the batch's referees (by CRM account, CRM
    contact, or a Stripe customer of its payments), every one owning one of the
    batch's Stripe ids, and those sharing an id or a source event with a conversion
    of the batch. ``payments``: every Stripe id of those conversions, and every
    Stripe id the batch names (each owned by one of ``conversions``).
    """

    conversions: Sequence[KnownConversion] = ()
    payments: Sequence[KnownPayment] = ()


@dataclass(frozen=True, slots=True)
class NewPayment:
    """A Stripe id a batch links to a conversion: one ``conversion_payments`` row."""

    payment_ref: str
    conversion_id: str
    stripe: StripeConversion


class PlacementBook:
    """The ledger's conversions and Stripe ids around one batch, and what the batch
    adds to them, answering each placement step as the ledger would.

    It offers the steps the use case asks of a store (``payment_owner``,
    ``earliest_of_referee``, ``insert``, ``add_payments``) with the same answers: the
    same payment's owner is the one linked first (then by Stripe id); the earliest
    conversion of a referee is the first recorded (then by id); an insert whose id or
    source event is already recorded is refused; a Stripe id already linked is not
    linked again. What was inserted and linked, in order, is in :attr:`inserted` and
    :attr:`linked`, for the store to write in one go.

    Args:
        facts: what the ledger knows around the batch (read under the conversions
            lock, so nothing changes it until the batch is written).
    """

    def __init__(self, facts: PlacementFacts) -> None:
        self._conversions: dict[str, KnownConversion] = {}
        self._source_events: set[str] = set()
        self._by_account: dict[tuple[Milestone, str], list[str]] = {}
        self._by_contact: dict[tuple[Milestone, str], list[str]] = {}
        self._by_customer: dict[str, set[str]] = {}
        self._payments: dict[str, KnownPayment] = {}
        self._with_stripe: set[str] = set()
        self.inserted: list[Conversion] = []
        self.linked: list[NewPayment] = []
        for known in facts.conversions:
            self._remember(known)
        for payment in facts.payments:
            self._link(payment)

    def _remember(self, known: KnownConversion) -> None:
        if known.conversion_id in self._conversions:
            return
        self._conversions[known.conversion_id] = known
        self._source_events.add(known.source_event)
        if known.referee_account_id:
            key = (known.milestone, known.referee_account_id)
            self._by_account.setdefault(key, []).append(known.conversion_id)
        if known.referee_contact_id:
            key = (known.milestone, known.referee_contact_id)
            self._by_contact.setdefault(key, []).append(known.conversion_id)

    def _link(self, payment: KnownPayment) -> None:
        self._payments.setdefault(payment.payment_ref, payment)
        self._with_stripe.add(payment.conversion_id)
        if payment.customer is not None:
            self._by_customer.setdefault(payment.customer, set()).add(payment.conversion_id)

    def payment_owner(self, refs: Sequence[str], milestone: Milestone) -> str | None:
        """The conversion at ``milestone`` owning any of the Stripe ids ``refs``."""
        owned = [
            (p.created_at, p.payment_ref, p.conversion_id)
            for ref in set(refs)
            if (p := self._payments.get(ref)) is not None
            and self._conversions[p.conversion_id].milestone is milestone
        ]
        return min(owned)[2] if owned else None

    def earliest_of_referee(
        self, conversion: Conversion, customer: str | None
    ) -> EarlierConversion | None:
        """The earliest conversion of the same referee (CRM account, CRM contact or
        Stripe customer) at the same milestone, or None."""
        milestone = conversion.milestone
        same: set[str] = set()
        if conversion.referee_account_id:
            same.update(self._by_account.get((milestone, conversion.referee_account_id), ()))
        if conversion.referee_contact_id:
            same.update(self._by_contact.get((milestone, conversion.referee_contact_id), ()))
        if customer:
            same.update(
                i
                for i in self._by_customer.get(customer, ())
                if self._conversions[i].milestone is milestone
            )
        if not same:
            return None
        earliest = min(
            (self._conversions[i] for i in same), key=lambda k: (k.created_at, k.conversion_id)
        )
        return EarlierConversion(
            earliest.conversion_id,
            earliest.referral_code,
            earliest.conversion_id in self._with_stripe,
        )

    def insert(self, conversion: Conversion, now: datetime) -> bool:
        """Take ``conversion`` as inserted at ``now``; False when its id or source
        event is already recorded."""
        if (
            conversion.conversion_id in self._conversions
            or conversion.source_event in self._source_events
        ):
            return False
        self._remember(
            KnownConversion(
                conversion.conversion_id,
                conversion.source_event,
                conversion.referral_code,
                conversion.milestone,
                conversion.referee_account_id,
                conversion.referee_contact_id,
                now,
            )
        )
        self.inserted.append(conversion)
        return True

    def add_payments(self, conversion_id: str, stripe: StripeConversion, now: datetime) -> int:
        """Link the payment's Stripe ids not linked yet to ``conversion_id``; how many."""
        added = 0
        for ref in stripe.payment_refs:
            if ref in self._payments:
                continue
            self._link(KnownPayment(ref, conversion_id, stripe.customer, now))
            self.linked.append(NewPayment(ref, conversion_id, stripe))
            added += 1
        return added

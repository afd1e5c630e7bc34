"""A Stripe payment or trial that stands for a referral conversion (pure: no I/O).

The domain's side of Stripe conversions: the event types that count, the
:class:`StripeConversion` a payment or trial becomes, how its records are named, and
the rule for a payment carrying no code of its own (:func:`inherited_code`). Reading
Stripe's JSON shapes (Checkout Sessions, Invoices, Subscriptions, Invoice Payments)
into these is the payment adapter's work: :mod:`integrations.payments.stripe_payloads`.
Placing a conversion among those already recorded is :mod:`domain.placement`'s.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from domain.errors import InputRejected
from domain.models import Conversion, Milestone
from domain.money import Money

SOURCE = "stripe"
CODE_KEY = "referral_code"

CHECKOUT_COMPLETED = "checkout.session.completed"
CHECKOUT_ASYNC_SUCCEEDED = "checkout.session.async_payment_succeeded"
INVOICE_PAID = "invoice.paid"
SUBSCRIPTION_CREATED = "customer.subscription.created"
INVOICE_PAYMENT_PAID = "invoice_payment.paid"
# The event types the conversion stage reads (and the polling fallback lists).
CONVERSION_EVENT_TYPES: tuple[str, ...] = (
    CHECKOUT_COMPLETED,
    CHECKOUT_ASYNC_SUCCEEDED,
    INVOICE_PAID,
    SUBSCRIPTION_CREATED,
)
# Events that only link a payment's ids to its invoice: from the 2025-03-31 API version
# on, an invoice no longer names its payment intent or charge, and a refund names only
# those; ``invoice_payment.paid`` (an Invoice Payment) ties them together.
LINK_EVENT_TYPES: tuple[str, ...] = (INVOICE_PAYMENT_PAID,)
# What one payment of a referred customer may reasonably be, in the program currency,
# unless the caller sets its own ceiling: above it the amount is refused as absurd
# (a unit mistake, a test payment in live mode) rather than turned into a reward.
DEFAULT_CEILING_MAJOR = "1000000"


@dataclass(frozen=True, slots=True)
class StripeConversion:
    """A conversion read from a Stripe event, with the Stripe objects behind it.

    Attributes:
        event_id: the Stripe event it was read from (``evt_...``).
        conversion: the attributed conversion; ``source_event`` is
            ``stripe:<event id>`` and ``conversion_id`` derives from the payment.
        customer: the Stripe customer (``cus_...``), if any.
        payment_refs: the Stripe ids behind it, the one the conversion id derives from
            first: invoice, payment intent, charge and session for a payment;
            subscription and session for a lead. A refund names one of these.
        payment: the amount paid (zero for a lead), in the program currency.
        first_payment: a Checkout payment, or an invoice opening a subscription.
        inherited_code: the code came from the referee's earlier conversion, not
            from this event.
    """

    event_id: str
    conversion: Conversion
    customer: str | None
    payment_refs: tuple[str, ...]
    payment: Money
    first_payment: bool
    inherited_code: bool = False

    @property
    def milestone(self) -> Milestone:
        return self.conversion.milestone

    def with_refs(self, refs: Sequence[str]) -> StripeConversion:
        """The same conversion also naming ``refs`` (ids of the same payment)."""
        return replace(self, payment_refs=stripe_ids(*self.payment_refs, *refs))

    @property
    def invoice_ids(self) -> tuple[str, ...]:
        """The invoices among the payment's ids (a Checkout Session's invoice)."""
        return tuple(r for r in self.payment_refs if r.startswith("in_"))


def record_of(event_id: str) -> str:
    """How quarantine rows and ``source_event`` name a Stripe event."""
    return f"{SOURCE}:{event_id}"


def inherited_code(record: str, earlier_codes: Collection[str]) -> str | None:
    """The code a payment carrying none inherits from its referee's earlier
    conversions; several codes cannot be attributed and are refused."""
    codes = sorted(set(earlier_codes))
    if len(codes) > 1:
        raise InputRejected(
            record,
            "customer",
            f"Stripe customer is linked to {len(codes)} referral codes; cannot attribute",
        )
    return codes[0] if codes else None


def stripe_ids(*values: object) -> tuple[str, ...]:
    """The string ids among ``values`` (expanded objects by their id), once each."""
    found: list[str] = []
    for value in values:
        if isinstance(value, Mapping):
            value = value.get("id")
        if isinstance(value, str) and value and len(value) <= 128 and value not in found:
            found.append(value)
    return tuple(found)

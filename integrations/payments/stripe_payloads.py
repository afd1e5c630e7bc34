"""Stripe events that stand for a referral conversion: reading Stripe's JSON shapes.

The adapter's side of :mod:`domain.stripe_conversions` (no I/O either: it reads
events already received).

Which events count, and what they mean (shapes as documented for the Checkout Session,
Invoice and Subscription objects, both before and after the 2025-03-31 "basil" API
version, which moved an invoice's subscription under ``parent.subscription_details``
and its payment intent and charge under ``payments``):

* ``checkout.session.completed`` and ``checkout.session.async_payment_succeeded``
  (a Checkout Session): ``payment_status == "paid"`` is the referee's first payment,
  milestone **customer**, for ``amount_total`` in ``currency``. ``"no_payment_required"``
  (a trial, or a free plan) is a signup, milestone **lead**. ``"unpaid"`` is nothing
  yet: an asynchronous payment method is still settling and
  ``checkout.session.async_payment_succeeded`` follows when it has. ``mode == "setup"``
  collects a card and is never a conversion.
* ``invoice.paid`` (an Invoice): ``amount_paid > 0`` is a payment, milestone
  **customer**; ``billing_reason == "subscription_create"`` marks the subscription's
  first payment. A later invoice (``subscription_cycle``...) is a conversion only for a
  referee the ledger has not converted yet: the first payment after a trial. An
  invoice paying nothing (the zero invoice that opens a trial) is not a payment.
* ``invoice_payment.paid`` (an Invoice Payment, from basil on) is no conversion: it
  ties a payment intent or charge to its invoice (:func:`invoice_payment_refs`), so
  the conversion of that invoice can be found by the refund that names them.
* ``customer.subscription.created`` (a Subscription): **lead** when its status is
  ``trialing``, otherwise nothing. Decision: a subscription that is not trialing is
  paid for at once, and that payment arrives as ``invoice.paid`` (and, through
  Checkout, ``checkout.session.completed``) carrying the customer milestone; also
  counting the subscription would tell the referrer "received" and "earned" about the
  same minute. A trial, on the other hand, is the only sign of the referral until the
  trial ends, so it is the "referral received" step. It is never "qualified": that is
  a sales judgement the CRM makes.

Where the referral code is found, first match wins:

1. the object's ``metadata["referral_code"]`` (for an invoice, then the subscription's
   metadata snapshot in ``parent.subscription_details.metadata``, or
   ``subscription_details.metadata`` before basil);
2. a Checkout Session's ``client_reference_id``, when it is a well-formed code (the
   field is also used by integrators for their own ids, so anything else there is
   theirs, not a malformed code);
3. a Checkout Session's ``discounts[].promotion_code`` when expanded to an object: its
   ``metadata["referral_code"]``, or its ``code`` when that is a well-formed code;
4. the customer's metadata: an expanded ``customer`` object, or ``customer_metadata``
   when the caller provides it;
5. for a payment only, ``earlier_codes``: the code the referee was last converted
   under (the ledger knows it through the Stripe customer), so the payment that ends
   a trial is credited to the code given at signup. Several codes: refused, since the
   customer cannot be attributed.

A code in metadata (1, 3 or 4) that is not well-formed is refused. Amounts are Stripe's
integer minor units already; the currency (lowercase at Stripe) is upper-cased. The
conversion id comes from the *payment* (the invoice, else the payment intent, else the
session) or, for a lead, from the subscription (else the session), never from the
event id: every event about the same payment (webhook and polling deliveries, the
session and its invoice) lands on one conversion.

Refusals (:class:`~domain.errors.InputRejected`) name ``stripe:<event id>`` and the
field, and never quote a value that a person typed (a code field may hold an email
address) or any personal data.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from domain.codes import normalize_code
from domain.errors import InputRejected
from domain.fraud import email_domain
from domain.models import Contact, Conversion, Milestone, derived_id
from domain.money import CURRENCY_EXPONENTS, Money
from domain.stripe_conversions import (
    CHECKOUT_ASYNC_SUCCEEDED,
    CHECKOUT_COMPLETED,
    CODE_KEY,
    DEFAULT_CEILING_MAJOR,
    INVOICE_PAID,
    INVOICE_PAYMENT_PAID,
    SOURCE,
    SUBSCRIPTION_CREATED,
    StripeConversion,
    inherited_code,
    record_of,
    stripe_ids,
)

_ISO = re.compile(r"^[a-z]{3}$")


def event_object(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data.object`` of an event, or an empty mapping."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    return obj if isinstance(obj, Mapping) else {}


def customer_of(event: Mapping[str, Any]) -> str | None:
    """The Stripe customer id an event is about (expanded or not), or ``None``."""
    return _customer(event_object(event))[0]


def codes_in(
    event: Mapping[str, Any], customer_metadata: Mapping[str, Any] | None = None
) -> set[str]:
    """The well-formed referral codes an event carries anywhere, normalized (to look
    their owners up before reading the events)."""
    obj = event_object(event)
    found = {
        normalize_code(text)
        for _, text in _code_sources(event.get("type"), obj, customer_metadata)
        if isinstance(text, str)
    }
    return {code for code in found if code is not None}


def invoice_payment_refs(event: Mapping[str, Any]) -> tuple[str, ...]:
    """The invoice an event pays, then the payment ids it names for it, or ``()``.

    ``invoice.paid`` names its payment intent and charge before the basil API version
    (or in ``payments`` when included); ``invoice_payment.paid`` names one payment of
    an invoice in every version. A conversion whose payment ids include the invoice
    takes the others, whatever order the events were read in.
    """
    obj = event_object(event)
    type_ = event.get("type")
    if type_ == INVOICE_PAID:
        return _payment_refs(INVOICE_PAID, obj)
    if type_ == INVOICE_PAYMENT_PAID:
        payment = obj.get("payment")
        named = payment if isinstance(payment, Mapping) else {}
        invoice = stripe_ids(obj.get("invoice"))
        if not invoice:
            return ()
        return stripe_ids(*invoice, named.get("payment_intent"), named.get("charge"))
    return ()


def stripe_conversion_from_event(
    event: Mapping[str, Any],
    code_owners: Mapping[str, Contact],
    currency: str,
    *,
    ceiling: Money | None = None,
    earlier_codes: Collection[str] = (),
    referee: Contact | None = None,
    customer_metadata: Mapping[str, Any] | None = None,
) -> StripeConversion | None:
    """The conversion a Stripe event stands for, or ``None`` when it stands for none.

    ``None`` means: not a conversion type, nothing paid (or paid later), or a payment
    with no referral code anywhere and no earlier conversion of its customer (an
    ordinary customer, not a referred one).

    Args:
        event: the Stripe event (``id``, ``type``, ``created``, ``data.object``).
        code_owners: normalized code -> the contact who owns it.
        currency: the program currency (ISO 4217, upper case).
        ceiling: the largest payment accepted; default 1,000,000 of ``currency``.
        earlier_codes: codes of the referee's earlier conversions (found through its
            Stripe customer); used for a payment carrying no code of its own.
        referee: the CRM contact whose ``stripe_customer_id`` is the event's
            customer, when there is one: the conversion then names its account.
        customer_metadata: the Stripe customer's metadata, when the caller has it.

    Returns:
        The attributed conversion with its Stripe references, or ``None``.

    Raises:
        InputRejected: naming ``stripe:<event id>`` and the field: a malformed or
            unknown code, a customer linked to several codes, a payment with neither
            customer nor payment reference, an unknown or other currency, or an
            amount that is not an integer, negative, or above the ceiling.
    """
    event_id = str(event.get("id") or "")
    type_ = event.get("type")
    obj = event_object(event)
    record = record_of(event_id)
    read = _reading(type_, obj)
    if read is None:
        return None
    milestone, amount_field, first_payment = read
    customer, expanded_metadata = _customer(obj)
    if customer_metadata is None:
        customer_metadata = expanded_metadata
    code = _code(record, type_, obj, customer_metadata)
    inherited = code is None and milestone is Milestone.CUSTOMER
    if inherited:
        code = inherited_code(record, earlier_codes)
    if code is None:
        return None
    owner = code_owners.get(code)
    if owner is None:
        raise InputRejected(record, "referral_code", "unknown referral code")
    if customer is None and obj.get("customer") is not None:
        raise InputRejected(record, "customer", "malformed Stripe customer id")
    occurred_at = _created(record, event)
    amount: Money | None = None
    if milestone is Milestone.LEAD:
        # A trial: its subscription is what the payment ending it will be found by.
        own_id = obj.get("id")
        refs = stripe_ids(
            own_id if type_ == SUBSCRIPTION_CREATED else obj.get("subscription"), own_id
        )
        payment = Money.zero(currency)
    else:
        assert amount_field is not None
        amount = payment = _amount(record, obj, amount_field, currency, ceiling)
        refs = _payment_refs(type_, obj)
        if customer is None and refs == stripe_ids(obj.get("id")) and type_ != INVOICE_PAID:
            # A guest Checkout payment without a payment intent or invoice: nothing a
            # refund or a later payment could ever be matched to.
            raise InputRejected(
                record, "customer", "payment has no customer and no payment reference"
            )
    if not refs:
        raise InputRejected(record, "id", "the event's object has no Stripe id")
    conversion = Conversion(
        conversion_id=derived_id("conversion", SOURCE, milestone.value, refs[0]),
        source_event=record,
        referral_code=code,
        referrer_id=owner.contact_id,
        referee_account_id=referee.account_id if referee else None,
        referee_contact_id=referee.contact_id if referee else None,
        milestone=milestone,
        occurred_at=occurred_at,
        amount=amount,
        referee_email_domain=_referee_domain(obj),
        card_fingerprint=card_fingerprint(obj),
    )
    return StripeConversion(
        event_id=event_id,
        conversion=conversion,
        customer=customer,
        payment_refs=refs,
        payment=payment,
        first_payment=first_payment,
        inherited_code=inherited,
    )


# -- reading -------------------------------------------------------------------------------


def _reading(type_: object, obj: Mapping[str, Any]) -> tuple[Milestone, str | None, bool] | None:
    """(milestone, amount field, first payment) of a conversion event, or ``None``."""
    if type_ in (CHECKOUT_COMPLETED, CHECKOUT_ASYNC_SUCCEEDED):
        if obj.get("mode") == "setup":
            return None
        status = obj.get("payment_status")
        if status == "paid":
            return Milestone.CUSTOMER, "amount_total", True
        if status == "no_payment_required":
            return Milestone.LEAD, None, False
        return None
    if type_ == INVOICE_PAID:
        paid = obj.get("amount_paid")
        if paid == 0:
            return None
        return (
            Milestone.CUSTOMER,
            "amount_paid",
            obj.get("billing_reason") == ("subscription_create"),
        )
    if type_ == SUBSCRIPTION_CREATED:
        return (Milestone.LEAD, None, False) if obj.get("status") == "trialing" else None
    return None


def _metadata_code(metadata: object) -> str | None:
    if not isinstance(metadata, Mapping):
        return None
    value = metadata.get(CODE_KEY)
    return value if isinstance(value, str) and value.strip() else None


def _code_sources(
    type_: object, obj: Mapping[str, Any], customer_metadata: Mapping[str, Any] | None
) -> list[tuple[str, object]]:
    """(field, value) of every place a code may be, in order of precedence.

    The field names a reference (``client_reference_id``) as ``~`` + field: such a
    value is a code only when well-formed.
    """
    sources: list[tuple[str, object]] = [
        ("metadata.referral_code", _metadata_code(obj.get("metadata")))
    ]
    if type_ == INVOICE_PAID:
        parent = obj.get("parent")
        details = parent.get("subscription_details") if isinstance(parent, Mapping) else None
        if isinstance(details, Mapping):
            sources.append(
                (
                    "parent.subscription_details.metadata.referral_code",
                    _metadata_code(details.get("metadata")),
                )
            )
        legacy = obj.get("subscription_details")
        if isinstance(legacy, Mapping):
            sources.append(
                (
                    "subscription_details.metadata.referral_code",
                    _metadata_code(legacy.get("metadata")),
                )
            )
    if type_ in (CHECKOUT_COMPLETED, CHECKOUT_ASYNC_SUCCEEDED):
        sources.append(("~client_reference_id", obj.get("client_reference_id")))
        discounts = obj.get("discounts")
        for i, discount in enumerate(discounts if isinstance(discounts, list) else []):
            promo = discount.get("promotion_code") if isinstance(discount, Mapping) else None
            if isinstance(promo, Mapping):
                field = f"discounts.{i}.promotion_code"
                sources.append(
                    (f"{field}.metadata.referral_code", _metadata_code(promo.get("metadata")))
                )
                sources.append((f"~{field}.code", promo.get("code")))
    sources.append(("customer.metadata.referral_code", _metadata_code(customer_metadata)))
    return sources


def _code(
    record: str,
    type_: object,
    obj: Mapping[str, Any],
    customer_metadata: Mapping[str, Any] | None,
) -> str | None:
    for field, value in _code_sources(type_, obj, customer_metadata):
        if not isinstance(value, str) or not value.strip():
            continue
        code = normalize_code(value)
        if code is not None:
            return code
        if not field.startswith("~"):
            # The value is not quoted: a person typed it, and it may be an address.
            raise InputRejected(record, field, "malformed referral code")
    return None


def _customer(obj: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any] | None]:
    """(customer id, metadata when the customer is expanded) of a Stripe object."""
    value = obj.get("customer")
    if isinstance(value, Mapping):
        metadata = value.get("metadata")
        value = value.get("id")
        expanded = metadata if isinstance(metadata, Mapping) else None
    else:
        expanded = None
    if isinstance(value, str) and value.startswith("cus_") and len(value) <= 128:
        return value, expanded
    return None, expanded


def _created(record: str, event: Mapping[str, Any]) -> datetime:
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        raise InputRejected(record, "created", "event has no integer created time")
    try:
        return datetime.fromtimestamp(created, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise InputRejected(record, "created", "created time out of range") from None


def _amount(
    record: str,
    obj: Mapping[str, Any],
    field: str,
    currency: str,
    ceiling: Money | None,
) -> Money:
    raw_currency = obj.get("currency")
    if not isinstance(raw_currency, str) or not raw_currency:
        raise InputRejected(record, "currency", "payment has no currency")
    if not _ISO.match(raw_currency.lower()):
        raise InputRejected(record, "currency", "malformed currency code")
    paid_in = raw_currency.upper()
    if paid_in not in CURRENCY_EXPONENTS:
        raise InputRejected(record, "currency", f"unknown currency {paid_in}")
    if paid_in != currency:
        raise InputRejected(record, "currency", f"payment in {paid_in}, program pays in {currency}")
    value = obj.get(field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputRejected(record, field, "amount is not an integer of minor units")
    if value < 0:
        raise InputRejected(record, field, "negative amount")
    amount = Money(value, paid_in)
    limit = ceiling if ceiling is not None else Money.parse(DEFAULT_CEILING_MAJOR, currency)
    if amount > limit:
        raise InputRejected(record, field, f"absurd amount: {amount} is above the {limit} ceiling")
    return amount


def _payment_refs(type_: object, obj: Mapping[str, Any]) -> tuple[str, ...]:
    """The payment's Stripe ids, the conversion's key first: invoice, payment intent,
    charge, then (for Checkout) the session. Never the subscription: its later
    invoices are other payments."""
    if type_ == INVOICE_PAID:
        # Before basil the invoice names its payment intent and charge; from basil on
        # they are in ``payments`` (when the event includes it).
        extra: list[object] = [obj.get("payment_intent"), obj.get("charge")]
        payments = obj.get("payments")
        listed = payments.get("data") if isinstance(payments, Mapping) else None
        for item in listed if isinstance(listed, list) else []:
            payment = item.get("payment") if isinstance(item, Mapping) else None
            if isinstance(payment, Mapping):
                extra += [payment.get("payment_intent"), payment.get("charge")]
        return stripe_ids(obj.get("id"), *extra)
    return stripe_ids(obj.get("invoice"), obj.get("payment_intent"), obj.get("id"))


def _referee_domain(obj: Mapping[str, Any]) -> str | None:
    """The domain of the payer's address (for the self-referral checks); the address
    itself is never kept."""
    details = obj.get("customer_details")
    email = details.get("email") if isinstance(details, Mapping) else None
    if not isinstance(email, str):
        email = obj.get("customer_email")
    domain = email_domain(email) if isinstance(email, str) else None
    return domain[:256] if domain else None


_FINGERPRINT = re.compile(r"^[A-Za-z0-9]{1,64}$")


def card_fingerprint(obj: Mapping[str, Any]) -> str | None:
    """Stripe's fingerprint of the card that paid, when the object carries it.

    A Charge has it in ``payment_method_details.card.fingerprint``, a PaymentMethod in
    ``card.fingerprint``. Events name a payment's charge and payment intent by id only,
    so it is known when they are expanded (``charge``, ``payment_intent.latest_charge``
    or ``payment_method``, an invoice's ``payments.data[].payment``) or the object is a
    Charge itself.
    """
    intent = obj.get("payment_intent")
    candidates: list[object] = [obj, obj.get("charge"), intent]
    if isinstance(intent, Mapping):
        candidates += [intent.get("latest_charge"), intent.get("payment_method")]
    payments = obj.get("payments")
    listed = payments.get("data") if isinstance(payments, Mapping) else None
    for item in listed if isinstance(listed, list) else []:
        payment = item.get("payment") if isinstance(item, Mapping) else None
        if isinstance(payment, Mapping):
            candidates += [payment.get("charge"), payment.get("payment_intent")]
            pi = payment.get("payment_intent")
            if isinstance(pi, Mapping):
                candidates.append(pi.get("latest_charge"))
    for candidate in candidates:
        if not isinstance(candidate, Mapping):
            continue
        details = candidate.get("payment_method_details")
        card = details.get("card") if isinstance(details, Mapping) else candidate.get("card")
        value = card.get("fingerprint") if isinstance(card, Mapping) else None
        if isinstance(value, str) and _FINGERPRINT.match(value):
            return value
    return None


# Stripe's prefixes of the objects a card payment can be read from: a Charge (``py_`` on
# a connected account), and a PaymentIntent, whose latest charge is the payment.
_CHARGE_PREFIXES = ("ch_", "py_")
_INTENT_PREFIX = "pi_"


def card_sources(obj: Mapping[str, Any], payment_refs: Sequence[str] = ()) -> tuple[str, ...]:
    """Where to read the card that paid, when ``obj`` (an event's object) did not carry it.

    An event names a payment's charge by id (``charge``, an expanded payment intent's
    ``latest_charge``, an invoice's ``payments``), or only its payment intent; the
    charge then has to be read from the provider. Charges come first (one read each),
    then payment intents (whose latest charge is the payment).

    Args:
        obj: the ``data.object`` of the event the conversion was read from, or ``{}``.
        payment_refs: the ids of the conversion's payment (``conversion_payments``),
            which a payment link may have completed since.

    Returns:
        The charge and payment intent ids to read, each once; ``()`` when ``obj``
        carries the fingerprint already, or nothing names a charge or a payment intent.
    """
    if card_fingerprint(obj) is not None:
        return ()
    intent = obj.get("payment_intent")
    named: list[object] = [obj.get("charge"), obj.get("latest_charge"), *payment_refs]
    intents: list[object] = [intent, *payment_refs]
    if isinstance(intent, Mapping):
        named.append(intent.get("latest_charge"))
    payments = obj.get("payments")
    listed = payments.get("data") if isinstance(payments, Mapping) else None
    for item in listed if isinstance(listed, list) else []:
        payment = item.get("payment") if isinstance(item, Mapping) else None
        if isinstance(payment, Mapping):
            named.append(payment.get("charge"))
            intents.append(payment.get("payment_intent"))
            if isinstance(payment.get("payment_intent"), Mapping):
                named.append(payment["payment_intent"].get("latest_charge"))
    charges = [i for i in stripe_ids(*named) if i.startswith(_CHARGE_PREFIXES)]
    return (*charges, *(i for i in stripe_ids(*intents) if i.startswith(_INTENT_PREFIX)))

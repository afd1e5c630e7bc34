"""Stripe events shaped as the API documents them, for the Stripe conversion tests.

Checkout Sessions, Invoices (the "basil" shape, with the subscription under
``parent.subscription_details``; ``legacy=True`` adds the pre-basil ``charge``,
``payment_intent`` and ``subscription``), Subscriptions and a refund. Every payer has
an email address, so the tests can check that none leaks into quarantine or logs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.models import Contact
from domain.ports import SourceBatch
from integrations.ledger.sql import SqlLedger
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import contact, people_batch

# Well-formed referral codes (R + 20 base32 characters).
CODE_A = "RAAAAAAAAAAAAAAAAAAAA"
CODE_B = "RBBBBBBBBBBBBBBBBBBBB"
PAYER_EMAIL = "ana.friend@newco.example"
AMOUNT = 49_900  # 499.00 EUR


class StripeLedger(SqlLedger):
    """SqlLedger, by the name the Stripe conversion tests know it under."""


def given_referrers(ledger: SqlLedger, now: datetime, **codes: str) -> dict[str, Contact]:
    """Referrers (contact id -> code), each on an account of their own; their contacts."""
    people = [contact(cid, f"A-{cid}") for cid in codes]
    ledger.sources.record_batch(people_batch(*people), now)
    record_ask_decisions(ledger, [], dict(codes), now, now)
    return {c.contact_id: c for c in people}


def given_stripe_customer(
    ledger: SqlLedger, now: datetime, contact_id: str, account_id: str, customer: str
) -> None:
    """A CRM contact whose Stripe customer id is ``customer`` (the referee, known)."""
    person = contact(contact_id, account_id, stripe_customer_id=customer)
    ledger.sources.record_batch(
        SourceBatch(source="test", contacts=[person], records_in=1, reference_only=1), now
    )


def event(event_id: str, type_: str, created: int, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


def session(
    session_id: str = "cs_1",
    *,
    created: int = 0,
    customer: str | None = "cus_1",
    code: str | None = CODE_A,
    client_reference_id: str | None = None,
    amount: Any = AMOUNT,
    currency: str = "eur",
    payment_status: str = "paid",
    mode: str = "subscription",
    invoice: str | None = "in_1",
    payment_intent: str | None = None,
    subscription: str | None = "sub_1",
    metadata: dict[str, Any] | None = None,
    discounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A completed Checkout Session."""
    return {
        "id": session_id,
        "object": "checkout.session",
        "amount_subtotal": amount,
        "amount_total": amount,
        "client_reference_id": client_reference_id,
        "created": created,
        "currency": currency,
        "customer": customer,
        "customer_details": {"email": PAYER_EMAIL, "name": "Ana Friend"},
        "customer_email": None,
        "discounts": discounts or [],
        "invoice": invoice,
        "livemode": False,
        "metadata": metadata if metadata is not None else ({"referral_code": code} if code else {}),
        "mode": mode,
        "payment_intent": payment_intent,
        "payment_status": payment_status,
        "status": "complete",
        "subscription": subscription,
    }


def invoice(
    invoice_id: str = "in_1",
    *,
    customer: str = "cus_1",
    amount: Any = AMOUNT,
    currency: str = "eur",
    billing_reason: str = "subscription_create",
    subscription: str | None = "sub_1",
    subscription_code: str | None = None,
    code: str | None = None,
    legacy: bool = False,
    charge: str = "ch_1",
    payment_intent: str = "pi_1",
) -> dict[str, Any]:
    """A paid Invoice."""
    obj: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "amount_due": amount,
        "amount_paid": amount,
        "amount_remaining": 0,
        "billing_reason": billing_reason,
        "currency": currency,
        "customer": customer,
        "customer_email": PAYER_EMAIL,
        "customer_name": "Ana Friend",
        "lines": {"object": "list", "data": [], "has_more": False},
        "livemode": False,
        "metadata": {"referral_code": code} if code else {},
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {
                "metadata": {"referral_code": subscription_code} if subscription_code else {},
                "subscription": subscription,
            },
        }
        if subscription
        else None,
        "status": "paid",
    }
    if legacy:
        obj |= {"charge": charge, "payment_intent": payment_intent, "subscription": subscription}
    return obj


def subscription(
    subscription_id: str = "sub_1",
    *,
    customer: str = "cus_1",
    status: str = "trialing",
    code: str | None = CODE_A,
) -> dict[str, Any]:
    return {
        "id": subscription_id,
        "object": "subscription",
        "currency": "eur",
        "customer": customer,
        "livemode": False,
        "metadata": {"referral_code": code} if code else {},
        "status": status,
        "trial_end": None,
    }


def refund(charge: str = "ch_1", payment_intent: str = "pi_1") -> dict[str, Any]:
    """A refunded charge (``charge.refunded``): not this stage's to read."""
    return {
        "id": charge,
        "object": "charge",
        "amount": AMOUNT,
        "amount_refunded": AMOUNT,
        "billing_details": {"email": PAYER_EMAIL},
        "currency": "eur",
        "customer": "cus_1",
        "payment_intent": payment_intent,
        "refunded": True,
    }


def invoice_payment(
    invoice_id: str = "in_1", payment_intent: str = "pi_1", payment_id: str = "inpay_1"
) -> dict[str, Any]:
    """An Invoice Payment (``invoice_payment.paid``): what ties a basil invoice to the
    payment intent its refund will name."""
    return {
        "id": payment_id,
        "object": "invoice_payment",
        "amount_paid": AMOUNT,
        "amount_requested": AMOUNT,
        "currency": "eur",
        "invoice": invoice_id,
        "is_default": True,
        "livemode": False,
        "payment": {"type": "payment_intent", "payment_intent": payment_intent},
        "status": "paid",
    }

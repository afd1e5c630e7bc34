"""Reading referral conversions out of Stripe events (domain.stripe_conversions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from domain.errors import InputRejected
from domain.models import Contact, Milestone, ReferrerType
from domain.money import Money
from domain.stripe_conversions import (
    CHECKOUT_ASYNC_SUCCEEDED,
    CHECKOUT_COMPLETED,
    INVOICE_PAID,
    INVOICE_PAYMENT_PAID,
    SUBSCRIPTION_CREATED,
    StripeConversion,
)
from integrations.payments.stripe_payloads import (
    codes_in,
    customer_of,
    invoice_payment_refs,
    stripe_conversion_from_event,
)
from tests.stripe_conversion_events import (
    AMOUNT,
    CODE_A,
    CODE_B,
    PAYER_EMAIL,
    event,
    invoice,
    invoice_payment,
    session,
    subscription,
)

T0 = int(datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp())
OWNER = Contact("C1", "A-C1", "Referrer One", "c1@a-c1.example", ReferrerType.CUSTOMER)
OWNERS = {CODE_A: OWNER, CODE_B: Contact("C2", "A-C2", "Referrer Two", None)}


def read(evt: dict[str, Any], **kwargs: Any) -> StripeConversion | None:
    return stripe_conversion_from_event(evt, OWNERS, "EUR", **kwargs)


def refused(evt: dict[str, Any], **kwargs: Any) -> InputRejected:
    with pytest.raises(InputRejected) as caught:
        read(evt, **kwargs)
    return caught.value


def checkout(obj: dict[str, Any], type_: str = CHECKOUT_COMPLETED) -> dict[str, Any]:
    return event("evt_cs", type_, T0, obj)


def paid(obj: dict[str, Any]) -> dict[str, Any]:
    return event("evt_in", INVOICE_PAID, T0 + 1, obj)


# -- what counts -----------------------------------------------------------------------------


def test_a_paid_checkout_session_is_a_customer_conversion_with_its_amount_and_payment_ids() -> None:
    found = read(checkout(session(payment_intent="pi_9")))

    assert found is not None
    conversion = found.conversion
    assert conversion.milestone is Milestone.CUSTOMER
    assert conversion.amount == Money(AMOUNT, "EUR")
    assert conversion.referral_code == CODE_A
    assert conversion.referrer_id == "C1"
    assert conversion.source_event == "stripe:evt_cs"
    assert conversion.occurred_at == datetime.fromtimestamp(T0, UTC)
    assert conversion.referee_email_domain == "newco.example"
    assert found.payment_refs == ("in_1", "pi_9", "cs_1")
    assert (found.customer, found.first_payment, found.inherited_code) == ("cus_1", True, False)


def test_an_async_payment_that_succeeded_later_counts_like_a_paid_session() -> None:
    found = read(checkout(session(), CHECKOUT_ASYNC_SUCCEEDED))
    assert found is not None
    assert found.milestone is Milestone.CUSTOMER


@pytest.mark.parametrize(
    ("obj", "why"),
    [
        (session(payment_status="unpaid"), "asynchronous payment still settling"),
        (session(mode="setup", payment_status="no_payment_required"), "setup collects a card"),
    ],
)
def test_a_session_that_paid_nothing_yet_is_no_conversion(obj: dict[str, Any], why: str) -> None:
    assert read(checkout(obj)) is None, why


def test_a_session_needing_no_payment_is_a_lead_on_its_subscription() -> None:
    found = read(checkout(session(payment_status="no_payment_required", amount=0)))

    assert found is not None
    assert found.milestone is Milestone.LEAD
    assert found.conversion.amount is None
    assert found.payment == Money(0, "EUR")
    assert found.payment_refs == ("sub_1", "cs_1")


def test_a_trialing_subscription_is_a_lead_and_an_active_one_is_no_conversion() -> None:
    trial = read(event("evt_sub", SUBSCRIPTION_CREATED, T0, subscription()))
    active = read(event("evt_sub2", SUBSCRIPTION_CREATED, T0, subscription(status="active")))

    assert trial is not None
    assert trial.milestone is Milestone.LEAD
    assert trial.payment_refs == ("sub_1",)
    assert active is None


def test_a_trial_from_checkout_and_from_its_subscription_share_one_conversion_id() -> None:
    by_session = read(checkout(session(payment_status="no_payment_required", amount=0)))
    by_subscription = read(event("evt_sub", SUBSCRIPTION_CREATED, T0, subscription()))

    assert by_session is not None
    assert by_subscription is not None
    assert by_session.conversion.conversion_id == by_subscription.conversion.conversion_id


def test_a_session_and_its_invoice_share_one_conversion_id_derived_from_the_invoice() -> None:
    from_session = read(checkout(session()))
    from_invoice = read(paid(invoice(code=CODE_A)))

    assert from_session is not None
    assert from_invoice is not None
    assert from_session.conversion.conversion_id == from_invoice.conversion.conversion_id
    assert from_session.conversion.source_event != from_invoice.conversion.source_event


def test_the_same_event_read_twice_gives_the_same_conversion() -> None:
    assert read(checkout(session())) == read(checkout(session()))


def test_a_paid_invoice_opening_a_subscription_is_a_first_payment() -> None:
    found = read(paid(invoice(subscription_code=CODE_A)))

    assert found is not None
    assert found.conversion.amount == Money(AMOUNT, "EUR")
    assert found.first_payment is True
    assert found.payment_refs == ("in_1",)


def test_a_pre_basil_invoice_names_its_charge_and_payment_intent() -> None:
    legacy = paid(invoice(code=CODE_A, legacy=True))

    found = read(legacy)

    assert found is not None
    assert found.payment_refs == ("in_1", "pi_1", "ch_1")
    assert invoice_payment_refs(legacy) == ("in_1", "pi_1", "ch_1")
    assert invoice_payment_refs(checkout(session())) == ()


def test_an_invoice_payment_ties_a_payment_intent_to_its_invoice() -> None:
    link = event("evt_ip", INVOICE_PAYMENT_PAID, T0, invoice_payment("in_4", "pi_4"))
    no_invoice = event("evt_ip2", INVOICE_PAYMENT_PAID, T0, {"id": "inpay_2", "payment": {}})

    assert invoice_payment_refs(link) == ("in_4", "pi_4")
    assert invoice_payment_refs(no_invoice) == ()
    assert read(link) is None  # a link, never a conversion of its own


def test_a_basil_invoice_with_its_payments_included_names_their_payment_intents() -> None:
    obj = invoice(code=CODE_A)
    obj["payments"] = {
        "object": "list",
        "data": [{"payment": {"type": "payment_intent", "payment_intent": "pi_7"}}],
    }
    found = read(paid(obj))
    assert found is not None
    assert found.payment_refs == ("in_1", "pi_7")


def test_a_later_invoice_is_a_payment_but_not_a_first_one() -> None:
    found = read(paid(invoice(billing_reason="subscription_cycle", code=CODE_A)))
    assert found is not None
    assert found.first_payment is False


def test_an_invoice_that_paid_nothing_is_no_conversion() -> None:
    assert read(paid(invoice(amount=0, code=CODE_A))) is None


def test_other_event_types_are_no_conversion() -> None:
    assert read(event("evt_r", "charge.refunded", T0, {"id": "ch_1"})) is None


# -- where the code is -----------------------------------------------------------------------


def test_the_metadata_code_comes_before_the_client_reference_id() -> None:
    found = read(checkout(session(code=CODE_A, client_reference_id=CODE_B)))
    assert found is not None
    assert found.conversion.referral_code == CODE_A


def test_a_well_formed_client_reference_id_is_a_code_typed_in_any_case() -> None:
    typed = "r" + "b" * 5 + "-" + "b" * 15
    found = read(checkout(session(code=None, client_reference_id=typed)))
    assert found is not None
    assert found.conversion.referral_code == CODE_B


def test_a_client_reference_id_that_is_no_code_is_the_integrators_and_ignored() -> None:
    assert read(checkout(session(code=None, client_reference_id="user_1234"))) is None


def test_an_expanded_promotion_code_carries_the_code() -> None:
    promo = {"id": "promo_1", "object": "promotion_code", "code": CODE_B, "metadata": {}}
    found = read(checkout(session(code=None, discounts=[{"promotion_code": promo}])))
    assert found is not None
    assert found.conversion.referral_code == CODE_B


def test_an_invoice_takes_the_code_from_its_subscriptions_metadata() -> None:
    found = read(paid(invoice(subscription_code=CODE_B)))
    assert found is not None
    assert found.conversion.referral_code == CODE_B


def test_the_customers_metadata_gives_the_code_when_expanded_or_provided() -> None:
    expanded = session(code=None)
    expanded["customer"] = {
        "id": "cus_1",
        "object": "customer",
        "metadata": {"referral_code": CODE_B},
    }

    from_expanded = read(checkout(expanded))
    provided = read(checkout(session(code=None)), customer_metadata={"referral_code": CODE_A})

    assert from_expanded is not None
    assert from_expanded.customer == "cus_1"
    assert from_expanded.conversion.referral_code == CODE_B
    assert provided is not None
    assert provided.conversion.referral_code == CODE_A


def test_a_payment_without_a_code_takes_its_customers_earlier_code() -> None:
    later = paid(invoice(billing_reason="subscription_cycle"))

    found = read(later, earlier_codes={CODE_A})

    assert found is not None
    assert (found.conversion.referral_code, found.inherited_code) == (CODE_A, True)


def test_a_payment_with_no_code_anywhere_is_an_ordinary_customer_not_a_referral() -> None:
    assert read(paid(invoice())) is None
    assert read(paid(invoice(currency="usd"))) is None


def test_a_lead_never_takes_an_earlier_code() -> None:
    trial = event("evt_sub", SUBSCRIPTION_CREATED, T0, subscription(code=None))
    assert read(trial, earlier_codes={CODE_A}) is None


def test_the_referee_known_to_the_crm_names_its_account_and_contact() -> None:
    referee = Contact("RC1", "NEWCO", "Ana Friend", PAYER_EMAIL, stripe_customer_id="cus_1")
    found = read(checkout(session()), referee=referee)
    assert found is not None
    assert (found.conversion.referee_account_id, found.conversion.referee_contact_id) == (
        "NEWCO",
        "RC1",
    )


def test_codes_in_and_customer_of_read_what_the_event_names() -> None:
    evt = checkout(session(code=CODE_A, client_reference_id=CODE_B.lower()))
    assert codes_in(evt) == {CODE_A, CODE_B}
    assert customer_of(evt) == "cus_1"
    assert customer_of(paid(invoice(customer="not-a-customer"))) is None


# -- what is refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("evt", "field", "reason"),
    [
        (checkout(session(code="R123")), "metadata.referral_code", "malformed referral code"),
        (checkout(session(code="R" + "C" * 20)), "referral_code", "unknown referral code"),
        (checkout(session(currency="usd")), "currency", "payment in USD, program pays in EUR"),
        (checkout(session(currency="xyz")), "currency", "unknown currency XYZ"),
        (checkout(session(currency="")), "currency", "payment has no currency"),
        (checkout(session(amount=-100)), "amount_total", "negative amount"),
        (checkout(session(amount="499.00")), "amount_total", "not an integer"),
        (checkout(session(amount=True)), "amount_total", "not an integer"),
        (checkout(session(amount=100_000_001)), "amount_total", "absurd amount"),
        (paid(invoice(amount=-1, code=CODE_A)), "amount_paid", "negative amount"),
        (paid(invoice(amount=10**15, code=CODE_A)), "amount_paid", "absurd amount"),
        (
            paid(invoice(subscription_code="nope")),
            "parent.subscription_details.metadata.referral_code",
            "malformed",
        ),
        (checkout(session(customer="someone")), "customer", "malformed Stripe customer id"),
        (
            checkout(session(customer=None, invoice=None, payment_intent=None)),
            "customer",
            "no customer and no payment reference",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_event_and_the_field(
    evt: dict[str, Any], field: str, reason: str
) -> None:
    rejected = refused(evt)
    assert rejected.record == f"stripe:{evt['id']}"
    assert rejected.field == field
    assert reason in rejected.reason


def test_the_ceiling_of_absurd_amounts_is_the_callers() -> None:
    evt = checkout(session(amount=50_000))
    assert "above the 100.00 EUR ceiling" in refused(evt, ceiling=Money(10_000, "EUR")).reason
    assert read(evt, ceiling=Money(50_000, "EUR")) is not None


def test_a_customer_linked_to_several_codes_cannot_be_attributed() -> None:
    rejected = refused(paid(invoice()), earlier_codes={CODE_A, CODE_B})
    assert (rejected.field, rejected.reason) == (
        "customer",
        "Stripe customer is linked to 2 referral codes; cannot attribute",
    )


def test_a_refusal_never_quotes_what_a_person_typed() -> None:
    rejected = refused(checkout(session(code=PAYER_EMAIL)))
    assert "@" not in str(rejected)
    assert rejected.field == "metadata.referral_code"

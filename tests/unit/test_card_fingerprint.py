"""The card fingerprint of a Stripe payment, read when the event carries it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from domain.models import Contact, ReferrerType
from domain.stripe_conversions import CHECKOUT_COMPLETED, INVOICE_PAID
from integrations.payments.stripe_payloads import (
    card_fingerprint,
    card_sources,
    stripe_conversion_from_event,
)
from tests.stripe_conversion_events import CODE_A, event, invoice, session

T0 = int(datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp())
OWNERS = {CODE_A: Contact("C1", "A-C1", "Referrer One", "c1@a-c1.example", ReferrerType.CUSTOMER)}


def charge(fingerprint: object = "Xt5EWLLDS7FJjR1c") -> dict[str, Any]:
    return {
        "id": "ch_1",
        "object": "charge",
        "payment_method_details": {"type": "card", "card": {"fingerprint": fingerprint}},
    }


def test_an_expanded_payment_intent_of_a_checkout_session_gives_its_cards_fingerprint() -> None:
    obj = session(payment_intent=None)
    obj["payment_intent"] = {"id": "pi_1", "object": "payment_intent", "latest_charge": charge()}
    found = stripe_conversion_from_event(event("evt_1", CHECKOUT_COMPLETED, T0, obj), OWNERS, "EUR")
    assert found is not None
    assert found.conversion.card_fingerprint == "Xt5EWLLDS7FJjR1c"
    # The expanded object still gives its id to the payment references.
    assert "pi_1" in found.payment_refs


def test_a_pre_basil_invoice_with_its_charge_expanded_gives_the_fingerprint() -> None:
    obj = invoice(code=CODE_A, legacy=True)
    obj["charge"] = charge("fpLEGACY")
    found = stripe_conversion_from_event(event("evt_2", INVOICE_PAID, T0, obj), OWNERS, "EUR")
    assert found is not None
    assert found.conversion.card_fingerprint == "fpLEGACY"


def test_a_basil_invoice_payment_with_its_charge_expanded_gives_the_fingerprint() -> None:
    obj = invoice(code=CODE_A)
    obj["payments"] = {"data": [{"payment": {"type": "charge", "charge": charge("fpBASIL")}}]}
    assert card_fingerprint(obj) == "fpBASIL"


def test_a_payment_method_expanded_on_the_payment_intent_gives_the_fingerprint() -> None:
    obj = {"payment_intent": {"id": "pi_1", "payment_method": {"card": {"fingerprint": "fpPM"}}}}
    assert card_fingerprint(obj) == "fpPM"


def test_events_naming_their_payments_by_id_only_carry_no_fingerprint() -> None:
    found = stripe_conversion_from_event(
        event("evt_3", CHECKOUT_COMPLETED, T0, session(payment_intent="pi_1")), OWNERS, "EUR"
    )
    assert found is not None
    assert found.conversion.card_fingerprint is None


@pytest.mark.parametrize("odd", [None, 42, "", "has spaces", "x" * 65, {"nested": 1}])
def test_a_malformed_fingerprint_is_ignored(odd: object) -> None:
    assert card_fingerprint(charge(odd)) is None


# -- where to read the card when the event did not carry it ---------------------------------


def test_an_expanded_payment_intent_naming_its_latest_charge_by_id_reads_that_charge() -> None:
    obj = session(payment_intent=None)
    obj["payment_intent"] = {"id": "pi_1", "object": "payment_intent", "latest_charge": "ch_9"}

    assert card_sources(obj) == ("ch_9", "pi_1")


def test_an_invoice_naming_its_charge_by_id_reads_the_charge_before_its_payment_intent() -> None:
    obj = invoice(legacy=True, charge="ch_7", payment_intent="pi_7")

    assert card_sources(obj, ["in_1", "pi_7", "ch_7"]) == ("ch_7", "pi_7")


def test_a_checkout_session_naming_only_its_payment_intent_reads_that_intent() -> None:
    assert card_sources(session(payment_intent="pi_3", invoice=None), ["pi_3", "cs_1"]) == ("pi_3",)


def test_the_payment_ids_a_payment_link_added_are_read_when_the_event_names_none() -> None:
    # A basil invoice names no payment; its invoice payment gave the conversion pi_5.
    assert card_sources(invoice(), ["in_1", "pi_5"]) == ("pi_5",)
    assert card_sources({}, ["in_1", "ch_5", "py_6"]) == ("ch_5", "py_6")


def test_an_event_carrying_the_fingerprint_needs_no_read() -> None:
    obj = invoice(legacy=True)
    obj["charge"] = charge()

    assert card_sources(obj, ["in_1", "ch_1"]) == ()


def test_a_trial_names_no_payment_to_read() -> None:
    assert card_sources({"id": "sub_1", "object": "subscription"}, ["sub_1", "cs_1"]) == ()

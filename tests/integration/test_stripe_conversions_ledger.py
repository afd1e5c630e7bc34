"""Stripe payments and trials become conversions once, on SQLite and (when configured)
Postgres: whatever the order and number of deliveries, one payment is one conversion
and one reward, bad input is quarantined with the event and field, and what belongs to
another stage (a refund) is left in the inbox untouched."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from domain.models import EventType, SourceEvent
from domain.money import Money
from domain.program import Program
from domain.stripe_conversions import (
    CHECKOUT_COMPLETED,
    INVOICE_PAID,
    INVOICE_PAYMENT_PAID,
    SUBSCRIPTION_CREATED,
)
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import (
    ConversionPaymentRow,
    ConversionRow,
    QuarantineRow,
    RewardRow,
)
from tasks.conversions import (
    link_stripe_payments,
    record_new_conversions,
    record_stripe_conversions,
)
from tasks.rewards import compute_new_rewards
from tests.integration.test_ledger_flow import events_batch
from tests.stripe_conversion_events import (
    AMOUNT,
    CODE_A,
    CODE_B,
    StripeLedger,
    event,
    given_referrers,
    given_stripe_customer,
    invoice,
    invoice_payment,
    refund,
    session,
    subscription,
)


@pytest.fixture
def stripe_ledger(ledger: SqlLedger, now: datetime) -> StripeLedger:
    """The ledger with the Stripe conversion area, and referrers C1 (CODE_A), C2 (CODE_B)."""
    joined = StripeLedger(ledger.engine)
    given_referrers(joined, now, C1=CODE_A, C2=CODE_B)
    return joined


def at(now: datetime, seconds: int = 0) -> int:
    return int(now.timestamp()) + seconds


def deliver(ledger: StripeLedger, *events: dict[str, Any]) -> None:
    for evt in events:
        ledger.store_stripe_event(evt, datetime.now().astimezone())


def convert(ledger: StripeLedger, program: Program, now: datetime) -> dict[str, int]:
    """The Stripe conversion stage: conversions, then payment links."""
    return {
        **record_stripe_conversions.fn(ledger, program, now),
        **link_stripe_payments.fn(ledger, now),
    }


def rows(ledger: SqlLedger, table: Any) -> list[dict[str, Any]]:
    with ledger.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table.__table__)).mappings()]


def count(ledger: SqlLedger, table: Any) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table.__table__)).scalar_one())


def payments_of(ledger: SqlLedger) -> dict[str, str]:
    """payment ref -> conversion id."""
    return {r["payment_ref"]: r["conversion_id"] for r in rows(ledger, ConversionPaymentRow)}


def checkout_event(now: datetime, seconds: int = 0, **fields: Any) -> dict[str, Any]:
    return event("evt_cs_1", CHECKOUT_COMPLETED, at(now, seconds), session(**fields))


def invoice_event(now: datetime, seconds: int = 0, **fields: Any) -> dict[str, Any]:
    fields.setdefault("legacy", True)
    return event("evt_in_1", INVOICE_PAID, at(now, seconds), invoice(**fields))


# -- one payment, one conversion ---------------------------------------------------------------

Step = Callable[[StripeLedger, Program, datetime], object]


def _deliver(evt: dict[str, Any]) -> Step:
    return lambda ledger, _program, _now: deliver(ledger, evt)


def _convert(ledger: StripeLedger, program: Program, now: datetime) -> object:
    return convert(ledger, program, now)


@pytest.mark.parametrize(
    "order",
    [
        "invoice created first, both waiting",
        "session created first, both waiting",
        "session converted before its invoice arrives",
        "invoice converted before its session arrives",
    ],
)
def test_a_checkout_session_and_its_invoice_become_one_conversion_with_its_payments(
    stripe_ledger: StripeLedger, program: Program, now: datetime, order: str
) -> None:
    invoice_first = order.startswith("invoice")
    paid = invoice_event(now, 0 if invoice_first else 5)
    completed = checkout_event(now, 5 if invoice_first else 0)
    steps: list[Step] = {
        "invoice created first, both waiting": [_deliver(completed), _deliver(paid), _convert],
        "session created first, both waiting": [_deliver(paid), _deliver(completed), _convert],
        "session converted before its invoice arrives": [
            _deliver(completed),
            _convert,
            _deliver(paid),
            _convert,
        ],
        "invoice converted before its session arrives": [
            _deliver(paid),
            _convert,
            _deliver(completed),
            _convert,
        ],
    }[order]
    for step in steps:
        step(stripe_ledger, program, now)
    rewards = compute_new_rewards.fn(stripe_ledger, program, now)

    (conversion,) = rows(stripe_ledger, ConversionRow)
    assert (conversion["milestone"], conversion["referral_code"]) == ("customer", CODE_A)
    assert (conversion["amount_minor"], conversion["currency"]) == (AMOUNT, "EUR")
    payments = rows(stripe_ledger, ConversionPaymentRow)
    assert {p["payment_ref"] for p in payments} == {"in_1", "cs_1", "pi_1", "ch_1"}
    assert {(p["conversion_id"], p["customer_ref"], p["amount_minor"]) for p in payments} == {
        (conversion["conversion_id"], "cus_1", AMOUNT)
    }
    assert rewards["rewards"] == 1
    assert stripe_ledger.unprocessed_stripe_events(None, 10) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_webhook_and_polling_deliveries_of_one_payment_five_times_in_any_order_give_one_reward(
    stripe_ledger: StripeLedger, program: Program, now: datetime, seed: int
) -> None:
    # Each delivery is the same event (same id), by the webhook or by a poll; the
    # conversion stage runs at random moments in between.
    deliveries = [checkout_event(now, 5), invoice_event(now)] * 5
    rng = random.Random(seed)
    rng.shuffle(deliveries)
    for evt in deliveries:
        deliver(stripe_ledger, evt)
        if rng.random() < 0.5:
            convert(stripe_ledger, program, now)
            compute_new_rewards.fn(stripe_ledger, program, now)
    convert(stripe_ledger, program, now)
    compute_new_rewards.fn(stripe_ledger, program, now)

    assert count(stripe_ledger, ConversionRow) == 1
    assert count(stripe_ledger, RewardRow) == 1
    assert set(payments_of(stripe_ledger)) == {"in_1", "cs_1", "pi_1", "ch_1"}
    assert len(stripe_ledger.unprocessed_stripe_events(None, 10)) == 0


def test_two_conversion_runs_at_once_record_one_conversion(
    stripe_ledger: StripeLedger, program: Program, now: datetime
) -> None:
    deliver(stripe_ledger, checkout_event(now), invoice_event(now, 1))
    runs = [StripeLedger(stripe_ledger.engine) for _ in range(4)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda lg: convert(lg, program, now), runs))

    assert count(stripe_ledger, ConversionRow) == 1
    assert set(payments_of(stripe_ledger)) == {"in_1", "cs_1", "pi_1", "ch_1"}


def test_an_early_refund_in_the_inbox_is_neither_consumed_nor_quarantined(
    stripe_ledger: StripeLedger, program: Program, now: datetime
) -> None:
    early = event("evt_refund", "charge.refunded", at(now, -60), refund())
    deliver(stripe_ledger, early)
    convert(stripe_ledger, program, now)
    deliver(stripe_ledger, checkout_event(now), invoice_event(now, 1))

    convert(stripe_ledger, program, now)

    waiting = stripe_ledger.unprocessed_stripe_events(None, 10)
    assert [e.event_id for e in waiting] == ["evt_refund"]
    assert count(stripe_ledger, QuarantineRow) == 0
    assert (
        payments_of(stripe_ledger)["ch_1"] == rows(stripe_ledger, ConversionRow)[0]["conversion_id"]
    )


@pytest.mark.parametrize(
    "order",
    ["link read in an earlier run", "all waiting together", "link arrives last"],
)
def test_a_basil_invoices_payment_intent_reaches_its_conversion_through_its_invoice_payment(
    stripe_ledger: StripeLedger, program: Program, now: datetime, order: str
) -> None:
    # From the basil API version on, neither the subscription's session nor its invoice
    # names the payment intent that a refund will name; the Invoice Payment does.
    link = event("evt_inpay", INVOICE_PAYMENT_PAID, at(now), invoice_payment())
    payment = [checkout_event(now, 2), invoice_event(now, 1, legacy=False)]
    batches = {
        "link read in an earlier run": [[link], payment],
        "all waiting together": [[link, *payment]],
        "link arrives last": [payment, [link]],
    }[order]
    for batch in batches:
        deliver(stripe_ledger, *batch)
        convert(stripe_ledger, program, now)

    refs = payments_of(stripe_ledger)
    assert set(refs) == {"cs_1", "in_1", "pi_1"}
    assert len(set(refs.values())) == 1
    (pi,) = [r for r in rows(stripe_ledger, ConversionPaymentRow) if r["payment_ref"] == "pi_1"]
    assert (pi["customer_ref"], pi["amount_minor"], pi["currency"]) == ("cus_1", AMOUNT, "EUR")
    assert stripe_ledger.unprocessed_stripe_events(None, 10) == []


def test_a_payment_link_of_an_invoice_nobody_referred_stops_waiting_after_the_grace_period(
    stripe_ledger: StripeLedger, program: Program, now: datetime
) -> None:
    old = event("evt_old", INVOICE_PAYMENT_PAID, at(now, -2 * 86_400), invoice_payment("in_8"))
    fresh = event("evt_new", INVOICE_PAYMENT_PAID, at(now, -60), invoice_payment("in_9"))
    deliver(stripe_ledger, old, fresh)

    counts = convert(stripe_ledger, program, now)

    waiting = stripe_ledger.unprocessed_stripe_events(None, 10)
    assert [e.event_id for e in waiting] == ["evt_new"]
    assert (counts["linked"], counts["closed"], counts["waiting"]) == (0, 1, 1)
    assert count(stripe_ledger, ConversionPaymentRow) == 0
    assert count(stripe_ledger, QuarantineRow) == 0


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "field", "reason"),
    [
        (session(code="ana.friend@newco.example"), "metadata.referral_code", "malformed"),
        (session(code="R" + "C" * 20), "referral_code", "unknown referral code"),
        (session(currency="usd"), "currency", "payment in USD, program pays in EUR"),
        (session(amount=-4_990), "amount_total", "negative amount"),
        (session(amount=10**12), "amount_total", "absurd amount"),
        (session(customer="ana.friend@newco.example"), "customer", "malformed Stripe customer"),
    ],
)
def test_bad_input_is_quarantined_with_the_event_id_and_field_and_nothing_else_happens(
    stripe_ledger: StripeLedger,
    program: Program,
    now: datetime,
    obj: dict[str, Any],
    field: str,
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    deliver(stripe_ledger, event("evt_bad", CHECKOUT_COMPLETED, at(now), obj))

    first = convert(stripe_ledger, program, now)
    again = convert(stripe_ledger, program, now)

    (row,) = rows(stripe_ledger, QuarantineRow)
    assert (row["source"], row["record"], row["field"], row["stage"]) == (
        "stripe",
        "stripe:evt_bad",
        field,
        "conversion",
    )
    assert reason in row["reason"]
    assert "@" not in f"{row}" + caplog.text
    assert (first["quarantined"], again["examined"]) == (1, 0)
    assert count(stripe_ledger, ConversionRow) == 0
    assert stripe_ledger.unprocessed_stripe_events(None, 10) == []


def test_a_second_trial_under_another_code_is_quarantined_and_the_payment_takes_the_first(
    stripe_ledger: StripeLedger, program: Program, now: datetime
) -> None:
    deliver(
        stripe_ledger,
        event("evt_t1", SUBSCRIPTION_CREATED, at(now), subscription("sub_1", code=CODE_A)),
        event("evt_t2", SUBSCRIPTION_CREATED, at(now, 1), subscription("sub_2", code=CODE_B)),
        event("evt_pay", INVOICE_PAID, at(now, 2), invoice(billing_reason="subscription_cycle")),
    )

    convert(stripe_ledger, program, now)

    (row,) = rows(stripe_ledger, QuarantineRow)
    assert (row["record"], row["field"]) == ("stripe:evt_t2", "referral_code")
    assert "through another referral code" in row["reason"]
    codes = {r["milestone"]: r["referral_code"] for r in rows(stripe_ledger, ConversionRow)}
    assert codes == {"lead": CODE_A, "customer": CODE_A}


def test_a_customer_linked_to_two_codes_is_quarantined_as_not_attributable(
    stripe_ledger: StripeLedger, program: Program, now: datetime
) -> None:
    # The CRM saw the referee sign up under one code and Stripe saw its trial under
    # another, before the CRM learned its Stripe customer id.
    signup = replace(crm_deal(CODE_A), type=EventType.SIGNUP, amount=None)
    stripe_ledger.sources.record_batch(events_batch(signup), now)
    record_new_conversions.fn(stripe_ledger, program, now)
    deliver(stripe_ledger, event("evt_t", SUBSCRIPTION_CREATED, at(now), subscription(code=CODE_B)))
    convert(stripe_ledger, program, now)
    given_stripe_customer(stripe_ledger, now, "RC1", "NEWCO", "cus_1")
    deliver(stripe_ledger, event("evt_pay", INVOICE_PAID, at(now, 9), invoice()))

    convert(stripe_ledger, program, now)

    (row,) = rows(stripe_ledger, QuarantineRow)
    assert (row["record"], row["field"]) == ("stripe:evt_pay", "customer")
    assert "linked to 2 referral codes; cannot attribute" in row["reason"]
    assert {r["milestone"] for r in rows(stripe_ledger, ConversionRow)} == {"lead"}


def test_payments_of_customers_nobody_referred_are_not_quarantined(
    stripe_ledger: StripeLedger, program: Program, now: datetime
) -> None:
    deliver(
        stripe_ledger,
        event("evt_eur", INVOICE_PAID, at(now), invoice("in_5", customer="cus_5")),
        event("evt_usd", INVOICE_PAID, at(now), invoice("in_6", customer="cus_6", currency="usd")),
        event("evt_cs", CHECKOUT_COMPLETED, at(now), session("cs_7", code=None, customer="cus_7")),
    )

    counts = convert(stripe_ledger, program, now)

    assert (counts["not_referred"], counts["quarantined"], counts["conversions"]) == (3, 0, 0)
    assert stripe_ledger.unprocessed_stripe_events(None, 10) == []


# -- trials and renewals ------------------------------------------------------------------------


def test_a_trial_is_a_lead_and_the_payment_ending_it_converts_once_and_renewals_never(
    stripe_ledger: StripeLedger, program: Program, now: datetime
) -> None:
    trial = session(payment_status="no_payment_required", amount=0, invoice="in_0")
    deliver(
        stripe_ledger,
        event("evt_sub", SUBSCRIPTION_CREATED, at(now), subscription()),
        event("evt_cs", CHECKOUT_COMPLETED, at(now, 1), trial),
        event("evt_zero", INVOICE_PAID, at(now, 1), invoice("in_0", amount=0)),
    )
    convert(stripe_ledger, program, now)
    first_paid = invoice("in_1", billing_reason="subscription_cycle")
    renewal = invoice("in_2", billing_reason="subscription_cycle", charge="ch_2")
    deliver(stripe_ledger, event("evt_in_1", INVOICE_PAID, at(now, 86_400 * 14), first_paid))
    convert(stripe_ledger, program, now)
    deliver(stripe_ledger, event("evt_in_2", INVOICE_PAID, at(now, 86_400 * 44), renewal))

    counts = convert(stripe_ledger, program, now)

    by_milestone = {r["milestone"]: r for r in rows(stripe_ledger, ConversionRow)}
    assert set(by_milestone) == {"lead", "customer"}
    assert by_milestone["customer"]["referral_code"] == CODE_A
    assert by_milestone["customer"]["amount_minor"] == AMOUNT
    refs = payments_of(stripe_ledger)
    assert refs["sub_1"] == refs["cs_1"] == by_milestone["lead"]["conversion_id"]
    assert refs["in_1"] == by_milestone["customer"]["conversion_id"]
    assert "in_2" not in refs  # a renewal's refund is not the referral's
    assert counts["duplicates"] == 1


# -- the CRM and Stripe report the same deal ------------------------------------------------


def crm_deal(code: str = CODE_A) -> SourceEvent:
    return SourceEvent(
        source="test",
        event_id="deal-1",
        type=EventType.DEAL_WON,
        occurred_at=datetime(2026, 11, 1, 12, 0).astimezone(),
        account_id="NEWCO",
        contact_id="RC1",
        amount=Money(1_200_000, "EUR"),
        referral_code=code,
    )


@pytest.mark.parametrize("crm_first", [True, False])
def test_a_deal_reported_by_the_crm_and_by_stripe_is_one_conversion_and_one_reward(
    stripe_ledger: StripeLedger, program: Program, now: datetime, crm_first: bool
) -> None:
    given_stripe_customer(stripe_ledger, now, "RC1", "NEWCO", "cus_1")

    def from_crm() -> dict[str, int]:
        stripe_ledger.sources.record_batch(events_batch(crm_deal()), now)
        return record_new_conversions.fn(stripe_ledger, program, now)

    def from_stripe() -> dict[str, int]:
        deliver(stripe_ledger, checkout_event(now), invoice_event(now, 1))
        return convert(stripe_ledger, program, now)

    first, second = (from_crm, from_stripe) if crm_first else (from_stripe, from_crm)
    first()
    later = second()
    compute_new_rewards.fn(stripe_ledger, program, now)

    (conversion,) = rows(stripe_ledger, ConversionRow)
    assert (conversion["referee_account_id"], conversion["milestone"]) == ("NEWCO", "customer")
    assert count(stripe_ledger, RewardRow) == 1
    if crm_first:
        # The Stripe payment joined the CRM's conversion, so a refund finds its reward.
        assert later["joined"] == 1
        assert conversion["source_event"] == "test:deal-1"
        assert set(payments_of(stripe_ledger).values()) == {conversion["conversion_id"]}
    else:
        assert later["duplicates"] == 1
        assert conversion["source_event"] == "stripe:evt_cs_1"


def test_a_referee_converted_under_one_code_is_quarantined_when_another_code_claims_it(
    stripe_ledger: StripeLedger, program: Program, now: datetime
) -> None:
    given_stripe_customer(stripe_ledger, now, "RC1", "NEWCO", "cus_1")
    stripe_ledger.sources.record_batch(events_batch(crm_deal(CODE_B)), now)
    record_new_conversions.fn(stripe_ledger, program, now)
    deliver(stripe_ledger, checkout_event(now))

    counts = convert(stripe_ledger, program, now)

    (conversion,) = rows(stripe_ledger, ConversionRow)
    assert conversion["referral_code"] == CODE_B
    (row,) = rows(stripe_ledger, QuarantineRow)
    assert (row["record"], row["field"]) == ("stripe:evt_cs_1", "referral_code")
    assert "through another referral code" in row["reason"]
    assert conversion["conversion_id"] in row["reason"]
    assert counts["quarantined"] == 1


def test_a_crm_event_for_a_referee_already_converted_at_that_milestone_is_not_converted_twice(
    stripe_ledger: StripeLedger, program: Program, now: datetime
) -> None:
    first = crm_deal()
    again = replace(first, event_id="deal-2", occurred_at=first.occurred_at + timedelta(days=1))
    stripe_ledger.sources.record_batch(events_batch(first, again), now)

    counts = record_new_conversions.fn(stripe_ledger, program, now)

    assert (counts["conversions"], counts["duplicates"]) == (1, 1)
    assert count(stripe_ledger, ConversionRow) == 1

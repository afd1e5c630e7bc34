"""A refund or dispute of a renewal invoice takes back the recurring reward that invoice
earned, by the rules of a first payment's, exactly once (SQLite, and Postgres when
configured).

The referee's invoices arrive in the Stripe inbox as the webhook stores them; the
conversion, payment-link, reward and clawback stages run as the flows run them; the
rewards are paid by Connect transfer through the real ``stripe`` library, over HTTP, to
the fake Stripe, which also takes the reversals.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from config.program import parse_program
from domain.models import PayoutRailKind, RewardStatus
from domain.money import Money
from domain.program import Program
from domain.stripe_conversions import INVOICE_PAID, INVOICE_PAYMENT_PAID
from integrations.ledger.migrate import alembic_config, upgrade
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import RewardPaymentRow, RewardRow
from integrations.payments.stripe_rail import StripeTransferRail
from integrations.payments.stripe_stand_in import FakeStripe
from tasks.clawbacks import ClawbackReport, apply_clawbacks
from tasks.conversions import link_stripe_payments, record_stripe_conversions
from tasks.payouts import submit_payouts
from tasks.rewards import compute_new_rewards
from tasks.use_cases.asks import record_ask_decisions
from tests.conftest import NOW, contact, people_batch
from tests.integration.clawback_helpers import balance, entries, refund_event, status
from tests.stripe_conversion_events import CODE_A, event, invoice, invoice_payment

INVOICE = 10_000  # what the referee pays each month, in cents
SHARE = 1_000  # the recurring rule's 10 % of it
FLAT = 10_000  # the flat reward the first payment earns
START = NOW - timedelta(days=70)  # the conversion: the first invoice paid
RENEWED = START + timedelta(days=30)  # the second invoice paid
RECURRING_RULE = {
    "id": "recurring",
    "referrer_type": "customer",
    "milestone": "customer",
    "kind": "recurring",
    "percent": "10",
    "months": 6,
}
FLAT_RULE = {
    "id": "flat",
    "referrer_type": "customer",
    "milestone": "customer",
    "kind": "flat",
    "amount": "100.00",
}
FIRST, RENEWAL, ON_FIRST = "flat", "recurring@in_2", "recurring@in_1"


@pytest.fixture
def program() -> Program:
    return parse_program({"rewards": [RECURRING_RULE, FLAT_RULE]})


@pytest.fixture
def account(ledger: SqlLedger, fake: FakeStripe) -> str:
    """The referrer C1, paid by transfer to a connected account, owning ``CODE_A``."""
    account = fake.add_account()
    ledger.sources.record_batch(people_batch(contact("C1", "A-C1", stripe_account_id=account)), NOW)
    record_ask_decisions(ledger, [], {"C1": CODE_A}, NOW, NOW)
    return account


# -- the referee's payments ---------------------------------------------------------------


def paid(n: int, at: datetime, *, basil: bool = False) -> dict[str, Any]:
    """``invoice.paid`` of the referee's ``n``-th invoice (the first carries the code).

    Before the basil API version the invoice names its charge and payment intent; from
    it on, only an ``invoice_payment.paid`` event (:func:`link`) does.
    """
    obj = invoice(
        f"in_{n}",
        amount=INVOICE,
        code=CODE_A if n == 1 else None,
        billing_reason="subscription_create" if n == 1 else "subscription_cycle",
        legacy=not basil,
        charge=f"ch_{n}",
        payment_intent=f"pi_{n}",
    )
    return event(f"evt_in_{n}", INVOICE_PAID, int(at.timestamp()), obj)


def link(n: int, at: datetime) -> dict[str, Any]:
    obj = invoice_payment(f"in_{n}", f"pi_{n}", f"inpay_{n}") | {"amount_paid": INVOICE}
    return event(f"evt_inpay_{n}", INVOICE_PAYMENT_PAID, int(at.timestamp()), obj)


def refund(event_id: str, n: int, *, refunded: int, intent: bool = True) -> dict[str, Any]:
    return refund_event(
        event_id,
        f"ch_{n}",
        NOW,
        refunded=refunded,
        amount=INVOICE,
        payment_intent=f"pi_{n}" if intent else None,
    )


def dispute(event_id: str, n: int) -> dict[str, Any]:
    """A dispute of the whole invoice, naming its charge and its payment intent."""
    obj = {
        "id": f"du_{event_id}",
        "object": "dispute",
        "amount": INVOICE,
        "charge": f"ch_{n}",
        "payment_intent": f"pi_{n}",
        "currency": "eur",
        "created": int(NOW.timestamp()),
        "reason": "fraudulent",
        "status": "needs_response",
    }
    return event(event_id, "charge.dispute.created", int(NOW.timestamp()), obj)


# -- the stages ----------------------------------------------------------------------------


def deliver(ledger: SqlLedger, *events: dict[str, Any]) -> None:
    for evt in events:
        ledger.provider_events.store_stripe_event(evt, NOW)


def reward(ledger: SqlLedger, program: Program, now: datetime = NOW) -> dict[str, str]:
    """The conversion stage, the payment links and the rewards; rule id -> reward id."""
    record_stripe_conversions.fn(ledger, program, now)
    link_stripe_payments.fn(ledger, now)
    compute_new_rewards.fn(ledger, program, now)
    with ledger.engine.connect() as conn:
        stmt = select(RewardRow.rule_id, RewardRow.reward_id)
        return {rule_id: reward_id for rule_id, reward_id in conn.execute(stmt)}


def pay(ledger: SqlLedger, rail: StripeTransferRail, *reward_ids: str) -> None:
    ledger.rewards.move(list(reward_ids), [RewardStatus.HOLDING], RewardStatus.PAYABLE, NOW)
    report = submit_payouts.fn(ledger, {rail.kind: rail}, list(reward_ids), NOW)
    assert report.paid == len(reward_ids)


def claw(ledger: SqlLedger, rail: StripeTransferRail, program: Program) -> ClawbackReport:
    return apply_clawbacks.fn(ledger, {PayoutRailKind.STRIPE_TRANSFER: rail}, program, NOW)


def untouched(ledger: SqlLedger, reward_id: str, status_: RewardStatus) -> bool:
    kinds = {kind for kind, _ in entries(ledger, reward_id)}
    return status(ledger, reward_id) is status_ and not kinds & {"cancelled", "clawed_back"}


# -- refunds and disputes of a renewal -----------------------------------------------------


def test_a_partial_refund_of_a_paid_renewal_reverses_that_invoices_reward_only(
    ledger: SqlLedger, account: str, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    deliver(ledger, paid(1, START), paid(2, RENEWED))
    rewards = reward(ledger, program)
    pay(ledger, rail, *rewards.values())
    # Half of the renewal refunded: half of the reward it earned comes back.
    deliver(ledger, refund("evt_r2", 2, refunded=INVOICE // 2))

    report = claw(ledger, rail, program)

    assert (report.applied, report.clawed_back) == (1, [rewards[RENEWAL]])
    assert report.reversals == {"succeeded": 1}
    (reversal,) = fake.reversals
    assert (reversal["amount"], reversal["metadata"]) == (
        SHARE // 2,
        {"reward_id": rewards[RENEWAL]},
    )
    assert entries(ledger, rewards[RENEWAL]) == [
        ("accrued", SHARE),
        ("paid", -SHARE),
        ("clawed_back", -SHARE // 2),
        ("reversed", SHARE // 2),
    ]
    assert untouched(ledger, rewards[FIRST], RewardStatus.PAID)
    assert untouched(ledger, rewards[ON_FIRST], RewardStatus.PAID)
    (row,) = ledger.clawbacks.of_rewards(rewards.values())
    assert (row["payment_key"], row["payment_minor"], row["refunded_minor"]) == (
        "ch_2",
        INVOICE,
        INVOICE // 2,
    )


def test_a_refund_of_an_unpaid_renewal_cancels_that_invoices_reward_only(
    ledger: SqlLedger, account: str, rail: StripeTransferRail, program: Program
) -> None:
    deliver(ledger, paid(1, START), paid(2, RENEWED))
    rewards = reward(ledger, program)
    # Any refund of it, partial or not, cancels an unpaid reward.
    deliver(ledger, refund("evt_r2", 2, refunded=1_000, intent=False))

    report = claw(ledger, rail, program)

    assert report.cancelled == [rewards[RENEWAL]]
    assert status(ledger, rewards[RENEWAL]) is RewardStatus.CANCELLED
    assert entries(ledger, rewards[RENEWAL]) == [("accrued", SHARE), ("cancelled", -SHARE)]
    assert untouched(ledger, rewards[FIRST], RewardStatus.HOLDING)
    assert untouched(ledger, rewards[ON_FIRST], RewardStatus.HOLDING)


@pytest.mark.parametrize(
    "when", ["read with its invoice", "read after the reward", "closed before the reward"]
)
def test_a_dispute_of_a_basil_renewal_finds_its_reward_through_the_invoice_payment(
    ledger: SqlLedger,
    account: str,
    fake: FakeStripe,
    rail: StripeTransferRail,
    program: Program,
    when: str,
) -> None:
    # From the basil API version on, only the invoice payment ties the renewal's payment
    # intent, which the dispute names, to the invoice that earned the reward.
    deliver(ledger, paid(1, START, basil=True), link(1, START), paid(2, RENEWED, basil=True))
    if when == "read with its invoice":
        deliver(ledger, link(2, RENEWED))
    elif when == "closed before the reward":
        deliver(ledger, link(2, RENEWED))
        # No conversion owns the renewal: its link stops waiting before any reward.
        record_stripe_conversions.fn(ledger, program, NOW)
        assert link_stripe_payments.fn(ledger, NOW + timedelta(days=2))["closed"] == 1
    rewards = reward(ledger, program)
    if when == "read after the reward":
        deliver(ledger, link(2, RENEWED))
        assert link_stripe_payments.fn(ledger, NOW)["linked"] == 1
    pay(ledger, rail, *rewards.values())
    deliver(ledger, dispute("evt_d2", 2))

    report = claw(ledger, rail, program)

    assert report.clawed_back == [rewards[RENEWAL]]
    assert [r["amount"] for r in fake.reversals] == [SHARE]
    assert balance(ledger, rewards[RENEWAL]) == 0
    assert untouched(ledger, rewards[FIRST], RewardStatus.PAID)
    assert untouched(ledger, rewards[ON_FIRST], RewardStatus.PAID)


def test_a_renewal_reversal_the_connected_account_cannot_cover_leaves_the_referrer_owing_it(
    ledger: SqlLedger, account: str, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    deliver(ledger, paid(1, START), paid(2, RENEWED))
    rewards = reward(ledger, program)
    pay(ledger, rail, rewards[RENEWAL])
    fake.set_account_balance(account, "eur", 0)  # the referrer spent the transfer
    deliver(ledger, refund("evt_r2", 2, refunded=INVOICE))

    report = claw(ledger, rail, program)

    assert report.reversals == {"unrecovered": 1}
    assert fake.reversals == []
    assert balance(ledger, rewards[RENEWAL]) == -SHARE
    assert ledger.reversals.debts(["C1"]) == {"C1": Money(SHARE, "EUR")}


# -- exactly once, whatever the order -----------------------------------------------------


def test_a_renewal_refunded_before_its_reward_is_computed_takes_it_back_once_it_is(
    ledger: SqlLedger, account: str, rail: StripeTransferRail, program: Program
) -> None:
    deliver(ledger, paid(1, START), paid(2, RENEWED), refund("evt_r2", 2, refunded=INVOICE))

    early = claw(ledger, rail, program)
    rewards = reward(ledger, program)
    later = claw(ledger, rail, program)
    last = claw(ledger, rail, program)

    # Neither the conversion's first payment nor any reward has the renewal's charge yet.
    assert (early.waiting_for_payment, early.applied) == (1, 0)
    assert later.cancelled == [rewards[RENEWAL]]
    assert last == ClawbackReport()
    assert entries(ledger, rewards[RENEWAL]) == [("accrued", SHARE), ("cancelled", -SHARE)]
    assert untouched(ledger, rewards[FIRST], RewardStatus.HOLDING)


def test_a_renewal_refund_delivered_twice_then_refunded_further_takes_back_each_part_once(
    ledger: SqlLedger, account: str, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    deliver(ledger, paid(1, START), paid(2, RENEWED))
    rewards = reward(ledger, program)
    pay(ledger, rail, *rewards.values())
    quarter = refund("evt_r2a", 2, refunded=INVOICE // 4)
    half = refund("evt_r2b", 2, refunded=INVOICE // 2)  # cumulative: a second quarter
    deliver(ledger, quarter, quarter)  # the webhook and the polling fallback
    first = claw(ledger, rail, program)
    deliver(ledger, half, quarter)
    second = claw(ledger, rail, program)

    assert (first.applied, second.applied) == (1, 1)
    assert [r["amount"] for r in fake.reversals] == [SHARE // 4, SHARE // 4]
    assert [k for k, _ in entries(ledger, rewards[RENEWAL])].count("clawed_back") == 2
    assert balance(ledger, rewards[RENEWAL]) == 0


# -- which rewards a payment reaches ------------------------------------------------------


def test_a_refund_of_the_first_payment_leaves_the_renewals_reward_alone(
    ledger: SqlLedger, account: str, rail: StripeTransferRail, program: Program
) -> None:
    deliver(ledger, paid(1, START), paid(2, RENEWED))
    rewards = reward(ledger, program)
    deliver(ledger, refund("evt_r1", 1, refunded=INVOICE))

    report = claw(ledger, rail, program)

    assert report.cancelled == sorted([rewards[FIRST], rewards[ON_FIRST]])
    assert untouched(ledger, rewards[RENEWAL], RewardStatus.HOLDING)


def test_a_renewals_refund_counts_within_the_window_from_its_invoice_not_the_conversion(
    ledger: SqlLedger, account: str, rail: StripeTransferRail, program: Program
) -> None:
    converted = NOW - timedelta(days=120)  # past the 90-day window
    renewed = NOW - timedelta(days=60)  # within it
    deliver(ledger, paid(1, converted), paid(2, renewed), paid(3, renewed + timedelta(days=30)))
    rewards = reward(ledger, program)
    deliver(ledger, refund("evt_r1", 1, refunded=INVOICE), refund("evt_r2", 2, refunded=INVOICE))

    report = claw(ledger, rail, program)

    assert (report.applied, report.ignored) == (1, 1)
    assert report.cancelled == [rewards[RENEWAL]]
    assert untouched(ledger, rewards[FIRST], RewardStatus.HOLDING)
    assert untouched(ledger, rewards["recurring@in_3"], RewardStatus.HOLDING)


# -- the payments of rewards recorded earlier ------------------------------------------------


def test_the_payments_behind_a_reward_are_never_rewritten(
    ledger: SqlLedger, account: str, program: Program
) -> None:
    deliver(ledger, paid(1, START), paid(2, RENEWED))
    reward(ledger, program)

    # A clawback years later must still find the payment that earned the reward.
    for sql in ("DELETE FROM reward_payments", "UPDATE reward_payments SET amount_minor = 0"):
        with pytest.raises(IntegrityError, match="append-only"), ledger.engine.begin() as conn:
            conn.execute(text(sql))


def test_recurring_rewards_recorded_before_reward_payments_get_them_from_the_inbox(
    ledger: SqlLedger, account: str, program: Program
) -> None:
    deliver(
        ledger,
        paid(1, START, basil=True),
        link(1, START),
        paid(2, RENEWED, basil=True),
        link(2, RENEWED),
    )
    reward(ledger, program)
    columns = (RewardPaymentRow.payment_ref, RewardPaymentRow.reward_id, RewardPaymentRow.paid_at)
    with ledger.engine.connect() as conn:
        recorded = set(conn.execute(select(*columns)).all())
    config = alembic_config(ledger.engine.url.render_as_string(hide_password=False))
    with ledger.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0015")

    upgrade(ledger.engine)

    with ledger.engine.connect() as conn:
        assert set(conn.execute(select(*columns)).all()) == recorded
    assert {ref for ref, _, _ in recorded} == {"in_1", "pi_1", "in_2", "pi_2"}

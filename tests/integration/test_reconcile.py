"""Reconciliation: the ledger's payouts and reversals against what the fake Stripe holds,
by reward id, in both directions, on SQLite and Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
import stripe

from domain.clawbacks import MismatchKind, MovementKind
from domain.models import PayoutOutcome, PayoutRailKind, PayoutResult
from domain.money import Money
from domain.program import Program
from integrations.ledger.sql import SqlLedger
from integrations.payments.stripe_rail import (
    StripeBalanceRail,
    StripeTransferRail,
    build_stripe_client,
)
from integrations.payments.stripe_reconcile import StripeRecords
from integrations.payments.stripe_stand_in import FakeStripe
from tasks.clawbacks import apply_clawbacks
from tasks.payouts import submit_payouts
from tasks.reconcile import reconcile_payouts
from tests.conftest import NOW, contact
from tests.integration.clawback_helpers import Ledger, link_payment, refund_event
from tests.integration.test_payout_crashes import seed_payable_reward

TRANSFER = PayoutRailKind.STRIPE_TRANSFER


@pytest.fixture
def records(fake: FakeStripe) -> Iterator[StripeRecords]:
    with StripeRecords.connect(fake.api_key, api_base=fake.url, max_network_retries=0) as reader:
        yield reader


@pytest.fixture
def client(fake: FakeStripe) -> Iterator[stripe.StripeClient]:
    """Stripe as someone outside the ledger uses it (the dashboard, another script)."""
    with requests.Session() as session:
        yield build_stripe_client(fake.api_key, fake.url, 0, session=session)


@pytest.fixture
def books(ledger: SqlLedger) -> Ledger:
    return Ledger(ledger.engine)


def reward(books: Ledger, fake: FakeStripe, n: int, amount: int = 2500, **ids: Any) -> str:
    if not ids:
        ids = {"stripe_account_id": fake.add_account()}
    person = contact(f"C{n}", f"A{n}", **ids)
    return seed_payable_reward(books, person, NOW, key=f"deal-{n}", amount=Money(amount, "EUR"))


def account_of(books: Ledger, reward_id: str) -> str:
    view = books.rewards.of([reward_id])[reward_id]
    account = books.asks.contacts([view.reward.referrer_id])[
        view.reward.referrer_id
    ].stripe_account_id
    assert account is not None
    return account


def reconcile(books: Ledger, records: StripeRecords) -> list[tuple[str, str, str]]:
    return [
        (m.kind.value, m.reward_id, m.movement.value)
        for m in reconcile_payouts.fn(books, records, NOW)
    ]


def test_a_clean_ledger_has_no_mismatch(
    books: Ledger,
    fake: FakeStripe,
    rail: StripeTransferRail,
    records: StripeRecords,
    program: Program,
) -> None:
    by_transfer = [reward(books, fake, n) for n in (1, 2)]
    by_credit = reward(books, fake, 3, stripe_customer_id=fake.add_customer("cus_3"))
    with StripeBalanceRail.connect(
        fake.api_key, api_base=fake.url, max_network_retries=0
    ) as credits:
        submit_payouts.fn(
            books, {rail.kind: rail, credits.kind: credits}, [*by_transfer, by_credit], NOW
        )
        # A partial refund claws part of one transfer and one credit back.
        link_payment(books, by_transfer[0], "ch_1", NOW)
        link_payment(books, by_credit, "ch_3", NOW)
        for n, charge in ((1, "ch_1"), (3, "ch_3")):
            books.provider_events.store_stripe_event(
                refund_event(f"evt_{n}", charge, NOW, refunded=60_000), NOW
            )
        apply_clawbacks.fn(books, {rail.kind: rail, credits.kind: credits}, program, NOW)
    assert len(fake.transfers) == 2
    assert len(fake.reversals) == 1
    assert len(fake.balance_transactions) == 2

    assert reconcile(books, records) == []


def test_a_transfer_at_stripe_missing_from_the_ledger_is_reported(
    books: Ledger, fake: FakeStripe, records: StripeRecords, client: stripe.StripeClient
) -> None:
    reward_id = reward(books, fake, 1)
    made = client.v1.transfers.create(
        {
            "amount": 2500,
            "currency": "eur",
            "destination": account_of(books, reward_id),
            "metadata": {"reward_id": reward_id},
        }
    )

    (mismatch,) = reconcile_payouts.fn(books, records, NOW)

    assert (mismatch.kind, mismatch.reward_id, mismatch.movement) == (
        MismatchKind.MISSING_IN_LEDGER,
        reward_id,
        MovementKind.PAYOUT,
    )
    assert (mismatch.stripe_ref, mismatch.stripe_amount) == (made.id, Money(2500, "EUR"))
    assert mismatch.detail == "the ledger has no payout for this reward"


def test_a_ledger_payout_missing_at_stripe_is_reported(
    books: Ledger, fake: FakeStripe, records: StripeRecords
) -> None:
    reward_id = reward(books, fake, 1)
    [payout] = books.payouts.prepare([(reward_id, TRANSFER, account_of(books, reward_id))], NOW)
    books.payouts.record_results(
        [PayoutResult(payout.payout_id, PayoutOutcome.SUCCEEDED, provider_ref="tr_ghost")], NOW
    )

    (mismatch,) = reconcile_payouts.fn(books, records, NOW)

    assert (mismatch.kind, mismatch.ledger_ref, mismatch.stripe_ref) == (
        MismatchKind.MISSING_AT_STRIPE,
        payout.payout_id,
        "tr_ghost",
    )
    assert mismatch.ledger_amount == Money(2500, "EUR")


def test_an_amount_mismatch_is_reported(
    books: Ledger, fake: FakeStripe, records: StripeRecords, client: stripe.StripeClient
) -> None:
    reward_id = reward(books, fake, 1)
    [payout] = books.payouts.prepare([(reward_id, TRANSFER, account_of(books, reward_id))], NOW)
    made = client.v1.transfers.create(
        {
            "amount": 2400,
            "currency": "eur",
            "destination": account_of(books, reward_id),
            "metadata": {"reward_id": reward_id, "payout_id": payout.payout_id},
        }
    )
    books.payouts.record_results(
        [PayoutResult(payout.payout_id, PayoutOutcome.SUCCEEDED, provider_ref=made.id)], NOW
    )

    (mismatch,) = reconcile_payouts.fn(books, records, NOW)

    assert mismatch.kind is MismatchKind.AMOUNT_MISMATCH
    assert (mismatch.ledger_amount, mismatch.stripe_amount) == (
        Money(2500, "EUR"),
        Money(2400, "EUR"),
    )
    assert mismatch.row()["stripe amount"] == "24.00 EUR"


def test_a_second_transfer_for_a_reward_paid_once_is_a_duplicate(
    books: Ledger,
    fake: FakeStripe,
    rail: StripeTransferRail,
    records: StripeRecords,
    client: stripe.StripeClient,
) -> None:
    reward_id = reward(books, fake, 1)
    submit_payouts.fn(books, {rail.kind: rail}, [reward_id], NOW)
    client.v1.transfers.create(
        {
            "amount": 2500,
            "currency": "eur",
            "destination": account_of(books, reward_id),
            "metadata": {"reward_id": reward_id},
        }
    )

    assert reconcile(books, records) == [("duplicate_at_stripe", reward_id, "payout")]


def test_a_reversal_made_outside_the_ledger_is_reported(
    books: Ledger,
    fake: FakeStripe,
    rail: StripeTransferRail,
    records: StripeRecords,
    client: stripe.StripeClient,
) -> None:
    reward_id = reward(books, fake, 1)
    submit_payouts.fn(books, {rail.kind: rail}, [reward_id], NOW)
    client.v1.transfers.reversals.create(fake.transfers[0]["id"], {"amount": 100})

    assert reconcile(books, records) == [("missing_in_ledger", reward_id, "reversal")]


def test_a_transfer_whose_payout_is_still_pending_says_so(
    books: Ledger, fake: FakeStripe, rail: StripeTransferRail, records: StripeRecords
) -> None:
    reward_id = reward(books, fake, 1)
    fake.script("POST /v1/transfers", ["commit_then_drop"])
    assert submit_payouts.fn(books, {rail.kind: rail}, [reward_id], NOW).retry_later == 1

    (mismatch,) = reconcile_payouts.fn(books, records, NOW)

    assert mismatch.kind is MismatchKind.MISSING_IN_LEDGER
    assert "still pending" in mismatch.detail
    submit_payouts.fn(books, {rail.kind: rail}, [], NOW + timedelta(minutes=5))
    assert reconcile_payouts.fn(books, records, NOW) == []


def test_every_page_of_transfers_and_reversals_is_read(
    fake: FakeStripe, records: StripeRecords, client: stripe.StripeClient
) -> None:
    account = fake.add_account()
    for n in range(101):
        client.v1.transfers.create(
            {
                "amount": 100 + n,
                "currency": "eur",
                "destination": account,
                "metadata": {"reward_id": f"reward-{n}"},
            }
        )
    last = fake.transfers[-1]["id"]
    for _ in range(11):  # more than the ten a transfer embeds
        client.v1.transfers.reversals.create(last, {"amount": 1})

    movements = records.movements([])

    payouts = [m for m in movements if m.kind is MovementKind.PAYOUT]
    reversals = [m for m in movements if m.kind is MovementKind.REVERSAL]
    assert len(payouts) == 101
    assert {m.reward_id for m in reversals} == {"reward-100"}  # hand-made: the transfer's
    assert len(reversals) == 11

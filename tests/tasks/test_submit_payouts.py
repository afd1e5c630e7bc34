"""``submit_payouts`` over the real ledger, with the in-memory rails.

The recording rail behaves like a provider with idempotency keys, so these tests see
what the task sends (``calls``), what moved money (``paid``) and what the ledger booked.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from domain.models import (
    MAX_PAYOUT_ATTEMPTS,
    Contact,
    PayoutOutcome,
    PayoutRailKind,
    RewardStatus,
    derived_id,
)
from domain.money import Money
from integrations.ledger.sql import SqlLedger
from integrations.payments.fake import RecordingRail
from integrations.payments.ledger_only import LedgerOnlyRail
from tasks.payouts import PayoutReport, submit_payouts
from tests.conftest import contact
from tests.integration.test_payout_crashes import entries, payout_rows, seed_payable_reward

TRANSFER = PayoutRailKind.STRIPE_TRANSFER
BALANCE = PayoutRailKind.STRIPE_BALANCE
AMOUNT = Money(2500, "EUR")


def with_account(contact_id: str) -> Contact:
    return contact(contact_id, f"A-{contact_id}", stripe_account_id=f"acct_{contact_id}")


def payout_id(reward_id: str, attempt: int = 1) -> str:
    return derived_id("payout", reward_id, str(attempt))


def key(reward_id: str, suffix: str = "transfer") -> str:
    return f"reward:{reward_id}:{suffix}"


@pytest.fixture
def transfer_rail() -> RecordingRail:
    return RecordingRail(TRANSFER)


@pytest.fixture
def reward_id(ledger: SqlLedger, now: datetime) -> str:
    return seed_payable_reward(ledger, with_account("C1"), now)


def status_of(ledger: SqlLedger, reward_id: str) -> RewardStatus:
    return ledger.rewards.of([reward_id])[reward_id].status


# -- paying --------------------------------------------------------------------------------


def test_payable_and_approved_rewards_are_paid_once_and_a_second_call_pays_nothing(
    ledger: SqlLedger, transfer_rail: RecordingRail, now: datetime
) -> None:
    payable = seed_payable_reward(ledger, with_account("C1"), now, key="d1")
    approved = seed_payable_reward(
        ledger, with_account("C2"), now, key="d2", status=RewardStatus.APPROVED
    )
    rails = {TRANSFER: transfer_rail}

    first = submit_payouts.fn(ledger, rails, [payable, approved], now)
    calls_after_first = list(transfer_rail.calls)
    second = submit_payouts.fn(ledger, rails, [payable, approved], now + timedelta(hours=1))

    assert first == PayoutReport(paid=2)
    assert second == PayoutReport()
    assert transfer_rail.calls == calls_after_first  # nothing sent the second time
    assert sorted((i.reward_id, i.destination, i.idempotency_key) for i in transfer_rail.paid) == (
        sorted([(payable, "acct_C1", key(payable)), (approved, "acct_C2", key(approved))])
    )
    for reward in (payable, approved):
        (payout,) = payout_rows(ledger, reward)
        assert payout["status"] == "succeeded"
        assert payout["provider_ref"].startswith("rec-stripe_transfer-")
        assert entries(ledger, reward, "paid") == [(-2500, "EUR", payout["payout_id"])]
        assert status_of(ledger, reward) is RewardStatus.PAID
        assert ledger.rewards.of([reward])[reward].balance == Money.zero("EUR")


def test_a_payout_pays_what_the_reward_still_owes_to_the_referrers_account(
    ledger: SqlLedger, transfer_rail: RecordingRail, now: datetime
) -> None:
    reward = seed_payable_reward(ledger, with_account("C7"), now, amount=Money(4321, "EUR"))

    submit_payouts.fn(ledger, {TRANSFER: transfer_rail}, [reward], now)

    (paid,) = transfer_rail.paid
    assert (paid.amount, paid.destination, paid.rail) == (Money(4321, "EUR"), "acct_C7", TRANSFER)
    assert paid.payout_id == payout_id(reward)
    assert paid.attempt == 1


@pytest.mark.parametrize(
    "status",
    [
        RewardStatus.HOLDING,
        RewardStatus.AWAITING_APPROVAL,
        RewardStatus.REJECTED,
        RewardStatus.CANCELLED,
    ],
)
def test_a_reward_that_is_not_payable_gets_no_payout(
    ledger: SqlLedger, transfer_rail: RecordingRail, now: datetime, status: RewardStatus
) -> None:
    reward = seed_payable_reward(ledger, with_account("C1"), now, status=status)

    report = submit_payouts.fn(ledger, {TRANSFER: transfer_rail}, [reward], now)

    assert report == PayoutReport()
    assert transfer_rail.calls == []
    assert payout_rows(ledger, reward) == []
    assert status_of(ledger, reward) is status


def test_an_unknown_reward_id_is_ignored(
    ledger: SqlLedger, transfer_rail: RecordingRail, reward_id: str, now: datetime
) -> None:
    report = submit_payouts.fn(ledger, {TRANSFER: transfer_rail}, ["no-such-reward"], now)

    assert report == PayoutReport()
    assert transfer_rail.calls == []
    assert payout_rows(ledger, reward_id) == []


# -- choosing a rail -----------------------------------------------------------------------


def test_a_referrer_with_no_stripe_ids_is_listed_without_a_rail_and_the_reward_stays_payable(
    ledger: SqlLedger, transfer_rail: RecordingRail, now: datetime
) -> None:
    reward = seed_payable_reward(ledger, contact("C9", "A9"), now)
    balance_rail = RecordingRail(BALANCE)

    report = submit_payouts.fn(
        ledger, {TRANSFER: transfer_rail, BALANCE: balance_rail}, [reward], now
    )

    assert report == PayoutReport(no_rail=[reward])
    assert transfer_rail.calls == balance_rail.calls == []
    assert payout_rows(ledger, reward) == []
    view = ledger.rewards.of([reward])[reward]
    assert view.status is RewardStatus.PAYABLE
    assert view.balance == AMOUNT


def test_a_referrer_with_only_a_stripe_customer_id_is_paid_by_a_balance_credit(
    ledger: SqlLedger, transfer_rail: RecordingRail, now: datetime
) -> None:
    reward = seed_payable_reward(ledger, contact("C8", "A8", stripe_customer_id="cus_C8"), now)
    balance_rail = RecordingRail(BALANCE)

    report = submit_payouts.fn(
        ledger, {TRANSFER: transfer_rail, BALANCE: balance_rail}, [reward], now
    )

    assert report == PayoutReport(paid=1)
    assert transfer_rail.calls == []
    (credit,) = balance_rail.paid
    assert (credit.destination, credit.idempotency_key) == ("cus_C8", key(reward, "credit"))


def test_without_a_payment_provider_the_ledger_only_rail_settles_every_payable_reward(
    ledger: SqlLedger, now: datetime
) -> None:
    no_ids = seed_payable_reward(ledger, contact("C1", "A1"), now, key="d1")
    with_ids = seed_payable_reward(ledger, with_account("C2"), now, key="d2")

    report = submit_payouts.fn(
        ledger, {PayoutRailKind.LEDGER_ONLY: LedgerOnlyRail()}, [no_ids, with_ids], now
    )

    assert report == PayoutReport(paid=2)
    for reward in (no_ids, with_ids):
        (payout,) = payout_rows(ledger, reward)
        assert payout["rail"] == PayoutRailKind.LEDGER_ONLY.value
        assert payout["destination"] is None
        assert payout["idempotency_key"] == key(reward, "ledger")
        assert payout["provider_ref"] == f"ledger-only:{payout['payout_id']}"
        assert status_of(ledger, reward) is RewardStatus.PAID


# -- outcomes ------------------------------------------------------------------------------


def test_a_retryable_outcome_keeps_the_payout_pending_with_its_key_until_a_later_call_pays(
    ledger: SqlLedger, transfer_rail: RecordingRail, reward_id: str, now: datetime
) -> None:
    transfer_rail.script(payout_id(reward_id), [PayoutOutcome.RETRYABLE])
    rails = {TRANSFER: transfer_rail}

    first = submit_payouts.fn(ledger, rails, [reward_id], now)

    assert first == PayoutReport(retry_later=1)
    (pending,) = payout_rows(ledger, reward_id)
    assert (pending["status"], pending["idempotency_key"], pending["tries"]) == (
        "pending",
        key(reward_id),
        1,
    )
    assert pending["error"] == "scripted: transient"
    assert entries(ledger, reward_id, "paid") == []
    assert status_of(ledger, reward_id) is RewardStatus.PAYABLE

    later = submit_payouts.fn(ledger, rails, [reward_id], now + timedelta(hours=1))

    assert later == PayoutReport(paid=1)
    assert [c.idempotency_key for c in transfer_rail.calls] == [key(reward_id)] * 2
    (settled,) = payout_rows(ledger, reward_id)
    assert (settled["payout_id"], settled["status"], settled["tries"]) == (
        pending["payout_id"],
        "succeeded",
        2,
    )
    assert settled["error"] is None
    assert status_of(ledger, reward_id) is RewardStatus.PAID


def test_a_payment_whose_answer_was_lost_is_booked_once_without_paying_again(
    ledger: SqlLedger, transfer_rail: RecordingRail, reward_id: str, now: datetime
) -> None:
    transfer_rail.script(payout_id(reward_id), ["lost_response"])
    rails = {TRANSFER: transfer_rail}

    lost = submit_payouts.fn(ledger, rails, [reward_id], now)
    later = submit_payouts.fn(ledger, rails, [reward_id], now)

    assert (lost, later) == (PayoutReport(retry_later=1), PayoutReport(paid=1))
    assert len(transfer_rail.paid) == 1  # the provider replayed the payment under the key
    assert len(transfer_rail.calls) == 2
    assert entries(ledger, reward_id, "paid") == [(-2500, "EUR", payout_id(reward_id))]


def test_a_failed_payout_is_marked_failed_and_the_next_call_pays_attempt_2_with_a_new_key(
    ledger: SqlLedger, transfer_rail: RecordingRail, reward_id: str, now: datetime
) -> None:
    transfer_rail.script(payout_id(reward_id), [PayoutOutcome.FAILED])
    rails = {TRANSFER: transfer_rail}

    refused = submit_payouts.fn(ledger, rails, [reward_id], now)

    assert refused == PayoutReport(failed=1)
    (failed,) = payout_rows(ledger, reward_id)
    assert (failed["status"], failed["error"]) == ("failed", "scripted: refused")
    assert status_of(ledger, reward_id) is RewardStatus.PAYABLE
    assert entries(ledger, reward_id, "paid") == []

    retried = submit_payouts.fn(ledger, rails, [reward_id], now + timedelta(days=1))

    assert retried == PayoutReport(paid=1)
    first, second = payout_rows(ledger, reward_id)
    assert (first["attempt"], first["status"]) == (1, "failed")
    assert (second["attempt"], second["status"]) == (2, "succeeded")
    assert second["payout_id"] == payout_id(reward_id, 2)
    assert second["idempotency_key"] == key(reward_id) + ":2"
    (paid,) = transfer_rail.paid
    assert (paid.attempt, paid.idempotency_key) == (2, key(reward_id) + ":2")
    assert entries(ledger, reward_id, "paid") == [(-2500, "EUR", payout_id(reward_id, 2))]
    assert status_of(ledger, reward_id) is RewardStatus.PAID


def test_after_the_last_allowed_attempt_fails_no_further_payout_is_made(
    ledger: SqlLedger, transfer_rail: RecordingRail, reward_id: str, now: datetime
) -> None:
    for attempt in range(1, MAX_PAYOUT_ATTEMPTS + 1):
        transfer_rail.script(payout_id(reward_id, attempt), [PayoutOutcome.FAILED])
    rails = {TRANSFER: transfer_rail}
    reports = [
        submit_payouts.fn(ledger, rails, [reward_id], now) for _ in range(MAX_PAYOUT_ATTEMPTS)
    ]
    calls = len(transfer_rail.calls)

    after = submit_payouts.fn(ledger, rails, [reward_id], now)

    assert reports == [PayoutReport(failed=1)] * MAX_PAYOUT_ATTEMPTS
    assert after == PayoutReport()
    assert len(transfer_rail.calls) == calls
    assert [p["status"] for p in payout_rows(ledger, reward_id)] == ["failed"] * 3
    assert status_of(ledger, reward_id) is RewardStatus.PAYABLE


# -- recovery ------------------------------------------------------------------------------


def test_a_payout_left_pending_by_a_crash_is_recovered_by_the_next_call_with_its_stored_key(
    ledger: SqlLedger, transfer_rail: RecordingRail, reward_id: str, now: datetime
) -> None:
    # A run stored the payout with its key (step 1) and died before calling the rail.
    (stored,) = ledger.payouts.prepare([(reward_id, TRANSFER, "acct_C1")], now)

    report = submit_payouts.fn(ledger, {TRANSFER: transfer_rail}, [], now + timedelta(hours=2))

    assert report == PayoutReport(paid=1, recovered=1)
    assert transfer_rail.paid == [stored]
    assert stored.idempotency_key == key(reward_id)
    (payout,) = payout_rows(ledger, reward_id)
    assert payout["status"] == "succeeded"
    assert status_of(ledger, reward_id) is RewardStatus.PAID


def test_a_recovered_payout_that_the_provider_already_made_is_booked_without_paying_twice(
    ledger: SqlLedger, transfer_rail: RecordingRail, reward_id: str, now: datetime
) -> None:
    # A run stored the payout and paid it, then died before booking the result.
    (stored,) = ledger.payouts.prepare([(reward_id, TRANSFER, "acct_C1")], now)
    transfer_rail.pay([stored])

    report = submit_payouts.fn(ledger, {TRANSFER: transfer_rail}, [reward_id], now)

    assert report == PayoutReport(paid=1)
    assert transfer_rail.paid == [stored]
    assert entries(ledger, reward_id, "paid") == [(-2500, "EUR", stored.payout_id)]


def test_a_pending_payout_on_a_rail_no_longer_configured_stays_pending_and_is_not_rerouted(
    ledger: SqlLedger, reward_id: str, now: datetime
) -> None:
    ledger.payouts.prepare([(reward_id, TRANSFER, "acct_C1")], now)
    ledger_only = RecordingRail(PayoutRailKind.LEDGER_ONLY)

    report = submit_payouts.fn(ledger, {PayoutRailKind.LEDGER_ONLY: ledger_only}, [reward_id], now)

    assert report.paid == 0
    assert ledger_only.calls == []
    (payout,) = payout_rows(ledger, reward_id)
    assert (payout["status"], payout["rail"]) == ("pending", TRANSFER.value)
    assert status_of(ledger, reward_id) is RewardStatus.PAYABLE

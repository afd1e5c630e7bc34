"""The Stripe rails take money back exactly once: transfer reversals and balance debits,
on the real ``stripe`` library, against the fake Stripe over HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from domain.clawbacks import ReversalInstruction, ReversalOutcome, ReversalResult
from domain.models import PayoutInstruction, PayoutOutcome, PayoutRailKind, derived_id
from domain.money import Money
from integrations.payments.stripe_rail import StripeBalanceRail, StripeTransferRail
from integrations.payments.stripe_stand_in import FakeStripe

REWARD = "reward-1"


@pytest.fixture
def transfers(rail: StripeTransferRail) -> StripeTransferRail:
    """The shared transfer rail on the fake (tests/integration/conftest.py)."""
    return rail


def transfer(fake: FakeStripe, rail: StripeTransferRail, account: str, amount: int = 2500) -> str:
    payout = PayoutInstruction(
        payout_id=derived_id("payout", REWARD, "1"),
        reward_id=REWARD,
        amount=Money(amount, "EUR"),
        rail=PayoutRailKind.STRIPE_TRANSFER,
        idempotency_key=PayoutInstruction.key_for(REWARD, PayoutRailKind.STRIPE_TRANSFER),
        destination=account,
    )
    (result,) = rail.pay([payout])
    assert result.outcome is PayoutOutcome.SUCCEEDED
    assert result.provider_ref is not None
    return result.provider_ref


def reversal(
    payout_ref: str | None,
    *,
    amount: int = 1000,
    event: str = "evt_1",
    rail: PayoutRailKind = PayoutRailKind.STRIPE_TRANSFER,
    destination: str | None = "acct_referrer",
    key_created_at: datetime | None = None,
) -> ReversalInstruction:
    return ReversalInstruction(
        reversal_id=derived_id("reversal", REWARD, event),
        reward_id=REWARD,
        payout_id=derived_id("payout", REWARD, "1"),
        amount=Money(amount, "EUR"),
        rail=rail,
        idempotency_key=ReversalInstruction.key_for(REWARD, event),
        destination=destination,
        payout_ref=payout_ref,
        key_created_at=key_created_at,
    )


def reverse_one(
    rail: StripeTransferRail | StripeBalanceRail, instruction: ReversalInstruction
) -> ReversalResult:
    (result,) = rail.reverse([instruction])
    assert result.reversal_id == instruction.reversal_id
    return result


def test_a_transfer_reversal_carries_the_amount_the_reward_id_and_the_fixed_key(
    fake: FakeStripe, transfers: StripeTransferRail
) -> None:
    transfer_id = transfer(fake, transfers, fake.add_account("acct_referrer"))
    instruction = reversal(transfer_id)

    first = reverse_one(transfers, instruction)
    again = reverse_one(transfers, instruction)

    assert first.outcome is ReversalOutcome.SUCCEEDED
    assert again == first
    (made,) = fake.reversals
    assert (made["id"], made["transfer"], made["amount"]) == (first.provider_ref, transfer_id, 1000)
    assert made["metadata"] == {"reward_id": REWARD}
    posted = [r for r in fake.requests if r.path.endswith("/reversals")]
    assert [(r.idempotency_key, r.replayed) for r in posted] == [
        (instruction.idempotency_key, False),
        (instruction.idempotency_key, True),
    ]


def test_a_connected_account_that_cannot_cover_the_reversal_is_insufficient_funds(
    fake: FakeStripe, transfers: StripeTransferRail
) -> None:
    account = fake.add_account("acct_referrer", balance={"eur": 0})
    transfer_id = transfer(fake, transfers, account)
    fake.set_account_balance(account, "eur", 999)

    result = reverse_one(transfers, reversal(transfer_id, amount=1000))
    replayed = reverse_one(transfers, reversal(transfer_id, amount=1000))

    assert result.outcome is ReversalOutcome.INSUFFICIENT_FUNDS
    assert result.provider_ref is None
    assert "balance_insufficient" in (result.error or "")
    assert replayed.outcome is ReversalOutcome.INSUFFICIENT_FUNDS  # saved under the key
    assert fake.reversals == []
    assert fake.account_balance(account, "eur") == 999


def test_a_transient_failure_is_retryable_and_the_retry_reverses_once(
    fake: FakeStripe, transfers: StripeTransferRail
) -> None:
    transfer_id = transfer(fake, transfers, fake.add_account("acct_referrer"))
    fake.script("POST /v1/transfers/*/reversals", [500])

    failed = reverse_one(transfers, reversal(transfer_id))
    retried = reverse_one(transfers, reversal(transfer_id))

    assert failed.outcome is ReversalOutcome.RETRYABLE
    assert retried.outcome is ReversalOutcome.SUCCEEDED
    assert len(fake.reversals) == 1


def test_a_lost_answer_after_the_reversal_was_made_is_replayed_not_repeated(
    fake: FakeStripe, transfers: StripeTransferRail
) -> None:
    transfer_id = transfer(fake, transfers, fake.add_account("acct_referrer"))
    fake.script("POST /v1/transfers/*/reversals", ["commit_then_drop"])

    lost = reverse_one(transfers, reversal(transfer_id))
    retried = reverse_one(transfers, reversal(transfer_id))

    assert lost.outcome is ReversalOutcome.RETRYABLE
    assert retried.outcome is ReversalOutcome.SUCCEEDED
    (made,) = fake.reversals
    assert retried.provider_ref == made["id"]


def test_past_the_keys_life_the_rail_finds_the_reversal_instead_of_making_another(
    fake: FakeStripe, transfers: StripeTransferRail
) -> None:
    transfer_id = transfer(fake, transfers, fake.add_account("acct_referrer"))
    stored_at = fake.now()
    fake.script("POST /v1/transfers/*/reversals", ["commit_then_drop"])
    assert reverse_one(transfers, reversal(transfer_id, key_created_at=stored_at)).outcome is (
        ReversalOutcome.RETRYABLE
    )
    fake.advance(hours=25)  # Stripe forgot the key

    found = reverse_one(transfers, reversal(transfer_id, key_created_at=stored_at))

    assert found.outcome is ReversalOutcome.SUCCEEDED
    (made,) = fake.reversals
    assert found.provider_ref == made["id"]
    assert fake.count("POST /v1/transfers/*/reversals") == 1
    assert fake.count("GET /v1/transfers/*/reversals") == 1


def test_reversing_more_than_remains_of_the_transfer_fails_for_good(
    fake: FakeStripe, transfers: StripeTransferRail
) -> None:
    transfer_id = transfer(fake, transfers, fake.add_account("acct_referrer"), amount=500)

    result = reverse_one(transfers, reversal(transfer_id, amount=600))

    assert result.outcome is ReversalOutcome.FAILED
    assert fake.reversals == []


@pytest.mark.parametrize(
    ("instruction", "why"),
    [
        (reversal(None), "no transfer id"),
        (reversal("po_123"), "no transfer id"),
        (reversal("tr_1", amount=0), "must be positive"),
        (reversal("tr_1", rail=PayoutRailKind.STRIPE_BALANCE), "cannot be reversed through"),
    ],
)
def test_an_instruction_the_transfer_rail_cannot_send_fails_without_a_request(
    fake: FakeStripe, transfers: StripeTransferRail, instruction: ReversalInstruction, why: str
) -> None:
    result = reverse_one(transfers, instruction)

    assert result.outcome is ReversalOutcome.FAILED
    assert why in (result.error or "")
    assert fake.requests == []


def test_a_balance_credit_is_taken_back_by_a_debit_on_the_customer_balance(
    fake: FakeStripe,
) -> None:
    customer = fake.add_customer("cus_referrer")
    instruction = reversal(None, rail=PayoutRailKind.STRIPE_BALANCE, destination=customer)
    with StripeBalanceRail.connect(
        fake.api_key, api_base=fake.url, max_network_retries=0, clock=fake.now
    ) as rail:
        first = reverse_one(rail, instruction)
        again = reverse_one(rail, instruction)
        later = reverse_one(
            rail,
            reversal(
                None,
                rail=PayoutRailKind.STRIPE_BALANCE,
                destination=customer,
                key_created_at=fake.now() - timedelta(hours=30),
            ),
        )

    assert first.outcome is ReversalOutcome.SUCCEEDED
    assert again == first
    assert later.provider_ref == first.provider_ref  # found by reward and amount
    (debit,) = fake.balance_transactions
    assert (debit["amount"], debit["metadata"]) == (1000, {"reward_id": REWARD})
    assert fake.customer_balance(customer) == 1000

"""The in-memory recording rail and the ledger-only rail."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.clawbacks import ReversalInstruction, ReversalOutcome
from domain.models import (
    PayoutInstruction,
    PayoutOutcome,
    PayoutRailKind,
    PayoutResult,
    derived_id,
)
from domain.money import Money
from domain.ports import PaymentRail
from integrations.payments.fake import RecordingRail
from integrations.payments.ledger_only import LedgerOnlyRail


def instruction(
    reward_id: str = "reward-1",
    *,
    attempt: int = 1,
    amount: int = 2500,
    rail: PayoutRailKind = PayoutRailKind.STRIPE_TRANSFER,
    destination: str | None = "acct_1",
) -> PayoutInstruction:
    return PayoutInstruction(
        payout_id=derived_id("payout", reward_id, str(attempt)),
        reward_id=reward_id,
        amount=Money(amount, "EUR"),
        rail=rail,
        idempotency_key=PayoutInstruction.key_for(reward_id, rail, attempt),
        destination=destination,
        attempt=attempt,
    )


# -- RecordingRail -----------------------------------------------------------------------


def test_the_recording_rail_satisfies_the_payment_rail_port() -> None:
    rail = RecordingRail(PayoutRailKind.STRIPE_BALANCE)

    assert isinstance(rail, PaymentRail)
    assert rail.kind is PayoutRailKind.STRIPE_BALANCE


def test_a_payment_is_recorded_and_succeeds_with_a_provider_ref() -> None:
    rail = RecordingRail()
    payout = instruction()

    (result,) = rail.pay([payout])

    assert result.outcome is PayoutOutcome.SUCCEEDED
    assert result.payout_id == payout.payout_id
    assert result.provider_ref
    assert rail.paid == [payout]


def test_the_same_key_twice_pays_once_and_gives_the_same_result() -> None:
    rail = RecordingRail()
    payout = instruction()

    first = rail.pay([payout])
    second = rail.pay([payout, payout])

    assert second == first + first
    assert rail.paid == [payout]
    assert len(rail.calls) == 3


def test_a_batch_gets_one_result_per_instruction_in_order() -> None:
    rail = RecordingRail()
    batch = [instruction(f"reward-{i}") for i in range(4)]

    results = rail.pay(batch)

    assert [r.payout_id for r in results] == [p.payout_id for p in batch]
    assert len({r.provider_ref for r in results}) == 4


def test_a_scripted_retryable_failure_pays_nothing_and_the_same_key_succeeds_later() -> None:
    rail = RecordingRail()
    payout = instruction()
    rail.script(payout.payout_id, [PayoutOutcome.RETRYABLE, PayoutOutcome.RETRYABLE])

    outcomes = [rail.pay([payout])[0].outcome for _ in range(3)]

    assert outcomes == [PayoutOutcome.RETRYABLE, PayoutOutcome.RETRYABLE, PayoutOutcome.SUCCEEDED]
    assert rail.paid == [payout]


def test_a_scripted_refusal_sticks_to_its_key_but_a_new_attempt_can_pay() -> None:
    rail = RecordingRail()
    first_attempt = instruction(attempt=1)
    rail.script(first_attempt.payout_id, [PayoutOutcome.FAILED])

    refused = rail.pay([first_attempt])[0]
    refused_again = rail.pay([first_attempt])[0]
    second_attempt = rail.pay([instruction(attempt=2)])[0]

    assert refused.outcome is PayoutOutcome.FAILED
    assert refused_again == refused
    assert second_attempt.outcome is PayoutOutcome.SUCCEEDED
    assert rail.paid == [instruction(attempt=2)]


def test_a_lost_response_pays_and_the_retry_returns_that_payment() -> None:
    rail = RecordingRail()
    payout = instruction()
    rail.script(payout.payout_id, ["lost_response"])

    lost = rail.pay([payout])[0]
    retried = rail.pay([payout])[0]

    assert lost.outcome is PayoutOutcome.RETRYABLE
    assert retried.outcome is PayoutOutcome.SUCCEEDED
    assert rail.paid == [payout]


def test_a_key_reused_for_a_different_payment_is_refused_without_paying() -> None:
    rail = RecordingRail()
    rail.pay([instruction(amount=2500)])

    (result,) = rail.pay([instruction(amount=9999)])

    assert result.outcome is PayoutOutcome.FAILED
    assert [p.amount.amount_minor for p in rail.paid] == [2500]


def test_an_instruction_for_another_rail_is_refused() -> None:
    rail = RecordingRail(PayoutRailKind.STRIPE_TRANSFER)

    (result,) = rail.pay([instruction(rail=PayoutRailKind.STRIPE_BALANCE)])

    assert result.outcome is PayoutOutcome.FAILED
    assert rail.paid == []


def test_total_paid_sums_each_payment_once_in_integer_minor_units() -> None:
    rail = RecordingRail()
    rail.pay(
        [instruction("a", amount=1999), instruction("b", amount=1), instruction("a", amount=1999)]
    )

    assert rail.total_paid("EUR") == Money(2000, "EUR")
    assert rail.total_paid("USD") == Money.zero("USD")


@given(
    calls=st.lists(
        st.tuples(st.sampled_from(["r1", "r2", "r3"]), st.integers(min_value=1, max_value=2)),
        max_size=30,
    )
)
def test_whatever_the_order_of_repeats_each_payout_is_paid_at_most_once(
    calls: list[tuple[str, int]],
) -> None:
    rail = RecordingRail()
    for reward_id, attempt in calls:
        rail.pay([instruction(reward_id, attempt=attempt)])

    keys = [p.idempotency_key for p in rail.paid]
    assert len(keys) == len(set(keys))
    assert set(keys) == {
        PayoutInstruction.key_for(r, PayoutRailKind.STRIPE_TRANSFER, a) for r, a in calls
    }
    assert rail.total_paid("EUR") == Money(2500 * len(set(calls)), "EUR")


# -- LedgerOnlyRail ----------------------------------------------------------------------


def test_the_ledger_only_rail_satisfies_the_payment_rail_port() -> None:
    rail = LedgerOnlyRail()

    assert isinstance(rail, PaymentRail)
    assert rail.kind is PayoutRailKind.LEDGER_ONLY


def test_the_ledger_only_rail_settles_with_a_ref_that_says_no_money_moved() -> None:
    payout = instruction(rail=PayoutRailKind.LEDGER_ONLY, destination=None)

    results = LedgerOnlyRail().pay([payout, payout])

    expected = PayoutResult(
        payout.payout_id, PayoutOutcome.SUCCEEDED, provider_ref=f"ledger-only:{payout.payout_id}"
    )
    assert results == [expected, expected]


def test_the_ledger_only_rail_refuses_an_instruction_meant_for_stripe() -> None:
    payout = instruction(rail=PayoutRailKind.STRIPE_TRANSFER)

    (result,) = LedgerOnlyRail().pay([payout])

    assert result.outcome is PayoutOutcome.FAILED
    assert result.provider_ref is None
    assert result.error is not None
    assert "moves no money" in result.error


def test_the_ledger_only_rail_records_a_clawback_as_recovered_without_moving_money() -> None:
    def reversal(reversal_id: str, rail: PayoutRailKind) -> ReversalInstruction:
        return ReversalInstruction(
            reversal_id=reversal_id,
            reward_id="r1",
            payout_id="p1",
            amount=Money(500, "EUR"),
            rail=rail,
            idempotency_key=ReversalInstruction.key_for("r1", reversal_id),
        )

    results = LedgerOnlyRail().reverse(
        [
            reversal("rv1", PayoutRailKind.LEDGER_ONLY),
            reversal("rv2", PayoutRailKind.STRIPE_TRANSFER),
        ]
    )

    assert [(r.reversal_id, r.outcome) for r in results] == [
        ("rv1", ReversalOutcome.SUCCEEDED),
        ("rv2", ReversalOutcome.FAILED),
    ]
    assert results[0].provider_ref == "ledger-only:rv1"

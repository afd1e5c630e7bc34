"""RecordingRail takes money back like a provider with idempotency keys."""

from __future__ import annotations

from domain.clawbacks import ReversalInstruction, ReversalOutcome, ReversalRail
from domain.models import PayoutRailKind
from domain.money import Money
from integrations.payments.fake import RecordingRail

LEDGER = PayoutRailKind.LEDGER_ONLY


def instruction(
    n: int = 1, amount: int = 500, rail: PayoutRailKind = LEDGER
) -> ReversalInstruction:
    return ReversalInstruction(
        reversal_id=f"rev-{n}",
        reward_id="reward-1",
        payout_id="payout-1",
        amount=Money(amount, "EUR"),
        rail=rail,
        idempotency_key=ReversalInstruction.key_for("reward-1", f"evt_{n}"),
    )


def test_the_recording_rail_is_a_reversal_rail() -> None:
    assert isinstance(RecordingRail(LEDGER), ReversalRail)


def test_a_reversal_is_made_once_per_key_and_replayed_after() -> None:
    rail = RecordingRail(LEDGER)

    first = rail.reverse([instruction()])
    again = rail.reverse([instruction()])

    assert first == again
    assert first[0].outcome is ReversalOutcome.SUCCEEDED
    assert [i.reversal_id for i in rail.reversed] == ["rev-1"]
    assert len(rail.reversal_calls) == 2
    assert rail.total_reversed("EUR") == Money(500, "EUR")


def test_insufficient_funds_is_saved_under_the_key_and_takes_nothing() -> None:
    rail = RecordingRail(LEDGER)
    rail.script_reversal("rev-1", [ReversalOutcome.INSUFFICIENT_FUNDS])

    outcomes = [rail.reverse([instruction()])[0].outcome for _ in range(2)]

    assert outcomes == [ReversalOutcome.INSUFFICIENT_FUNDS] * 2
    assert rail.reversed == []


def test_a_lost_response_reverses_and_the_retry_is_a_replay() -> None:
    rail = RecordingRail(LEDGER)
    rail.script_reversal("rev-1", ["lost_response"])

    lost = rail.reverse([instruction()])[0]
    retried = rail.reverse([instruction()])[0]

    assert (lost.outcome, retried.outcome) == (ReversalOutcome.RETRYABLE, ReversalOutcome.SUCCEEDED)
    assert len(rail.reversed) == 1


def test_a_transient_failure_saves_nothing_and_a_reused_key_is_refused() -> None:
    rail = RecordingRail(LEDGER)
    rail.script_reversal("rev-1", [ReversalOutcome.RETRYABLE])

    assert rail.reverse([instruction()])[0].outcome is ReversalOutcome.RETRYABLE
    assert rail.reverse([instruction()])[0].outcome is ReversalOutcome.SUCCEEDED
    reused = rail.reverse([instruction(amount=999)])[0]
    assert reused.outcome is ReversalOutcome.FAILED
    assert rail.reverse([instruction(2, rail=PayoutRailKind.STRIPE_TRANSFER)])[0].outcome is (
        ReversalOutcome.FAILED
    )
    assert len(rail.reversed) == 1

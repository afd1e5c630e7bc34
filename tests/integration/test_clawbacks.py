"""Refunds, chargebacks and churn take rewards back exactly once, on SQLite and Postgres.

Rewards are paid by Connect transfer through the real ``stripe`` library, over HTTP, to
the fake Stripe; refunds, disputes and cancelled subscriptions arrive in the Stripe inbox
as the webhook receiver stores them; ``apply_clawbacks`` runs as the flow runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from domain.clawbacks import ReversalInstruction, ReversalOutcome, ReversalResult
from domain.models import PayoutRailKind, RewardStatus, derived_id
from domain.money import Money
from domain.program import Clawbacks, Program
from integrations.ledger.sql import SqlLedger
from integrations.ledger.tables import ConversionPaymentRow
from integrations.payments.fake import RecordingRail
from integrations.payments.stripe_rail import StripeBalanceRail, StripeTransferRail
from integrations.payments.stripe_stand_in import FakeStripe
from tasks.asks import compose_notice
from tasks.clawbacks import ClawbackReport, apply_clawbacks
from tasks.payouts import CLAIM_LEASE, submit_payouts
from tests.conftest import NOW, contact
from tests.integration.clawback_helpers import (
    Ledger,
    balance,
    churn_event,
    clawback_rows,
    dispute_event,
    entries,
    link_payment,
    refund_event,
    reversal_rows,
    status,
)
from tests.integration.test_ledger_flow import conversion_for, given_referrer, reward_for
from tests.integration.test_payout_crashes import seed_payable_reward

PAID = 2500  # the reward, in cents
CHARGE = "ch_referee_1"
CONVERSION_AT = NOW - timedelta(days=60)  # seed_payable_reward's conversion time


@pytest.fixture
def clawbacks(ledger: SqlLedger) -> Ledger:
    return Ledger(ledger.engine)


def rails_of(*rails: Any) -> dict[PayoutRailKind, Any]:
    return {r.kind: r for r in rails}


def paid_reward(
    ledger: Ledger,
    fake: FakeStripe,
    rail: StripeTransferRail,
    *,
    key: str = "deal-1",
    charge: str = CHARGE,
    account: str | None = None,
    referrer: str = "C1",
) -> str:
    """A reward paid by transfer, whose conversion was paid by the referee's ``charge``."""
    reward_id = unpaid_reward(
        ledger, fake, key=key, charge=charge, account=account, referrer=referrer
    )
    report = submit_payouts.fn(ledger, rails_of(rail), [reward_id], NOW)
    assert report.paid == 1
    return reward_id


def unpaid_reward(
    ledger: Ledger,
    fake: FakeStripe,
    *,
    key: str = "deal-1",
    charge: str | None = CHARGE,
    account: str | None = None,
    referrer: str = "C1",
    status_: RewardStatus = RewardStatus.PAYABLE,
) -> str:
    person = contact(referrer, f"A-{referrer}", stripe_account_id=account or fake.add_account())
    reward_id = seed_payable_reward(
        ledger, person, NOW, key=key, amount=Money(PAID, "EUR"), status=status_
    )
    if charge is not None:
        link_payment(ledger, reward_id, charge, NOW)
    return reward_id


def run(
    ledger: Ledger, rails: dict[PayoutRailKind, Any], program: Program, now: datetime = NOW
) -> ClawbackReport:
    return apply_clawbacks.fn(ledger, rails, program, now)


def store(ledger: Ledger, *events: dict[str, Any]) -> None:
    for event in events:
        ledger.provider_events.store_stripe_event(event, NOW)


# -- before payout ------------------------------------------------------------------------


def test_a_refund_before_payout_cancels_the_unpaid_reward(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    reward_id = unpaid_reward(clawbacks, fake)
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=30_000))

    report = run(clawbacks, rails_of(rail), program)

    assert (report.applied, report.cancelled, report.clawed_back) == (1, [reward_id], [])
    assert status(clawbacks, reward_id) is RewardStatus.CANCELLED
    assert entries(clawbacks, reward_id) == [("accrued", PAID), ("cancelled", -PAID)]
    assert balance(clawbacks, reward_id) == 0
    assert submit_payouts.fn(clawbacks, rails_of(rail), [reward_id], NOW).paid == 0
    assert fake.transfers == []
    assert reversal_rows(clawbacks) == []
    assert clawbacks.provider_events.unprocessed_stripe_events(None, 10) == []


def test_a_cancelled_reward_awaiting_approval_has_its_waiting_run_ended(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    from integrations.approvals.fake import RecordingApprovalRuns

    reward_id = unpaid_reward(clawbacks, fake, status_=RewardStatus.AWAITING_APPROVAL)
    runs = RecordingApprovalRuns()
    [(request_id, _)] = clawbacks.approvals.open_requests([reward_id], NOW).values()
    clawbacks.approvals.attach_flow_runs(runs.start({request_id: reward_id}))
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=120_000))

    report = apply_clawbacks.fn(clawbacks, rails_of(rail), program, NOW, runs)

    assert report.cancelled == [reward_id]
    assert report.approvals_closed == 1
    assert runs.cancelled == [f"run-{request_id}"]
    assert clawbacks.approvals.waiting() == []
    assert clawbacks.approvals.overdue(waiting_since=NOW + timedelta(days=30)) == []


# -- after payout -------------------------------------------------------------------------


def test_a_partial_refund_after_payout_reverses_the_prorated_amount_once(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    reward_id = paid_reward(clawbacks, fake, rail)
    # A third of the referee's 1,200.00 EUR payment refunded: a third of the reward back.
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=40_000))

    first = run(clawbacks, rails_of(rail), program)
    again = run(clawbacks, rails_of(rail), program)

    assert first.clawed_back == [reward_id]
    assert first.reversals == {"succeeded": 1}
    assert again == ClawbackReport()
    (transfer,) = fake.transfers
    (reversal,) = fake.reversals
    assert (reversal["transfer"], reversal["amount"]) == (transfer["id"], 833)
    assert reversal["metadata"] == {"reward_id": reward_id}
    assert entries(clawbacks, reward_id) == [
        ("accrued", PAID),
        ("paid", -PAID),
        ("clawed_back", -833),
        ("reversed", 833),
    ]
    (row,) = reversal_rows(clawbacks, reward_id)
    assert row["idempotency_key"] == f"reward:{reward_id}:reversal:evt_r1"
    assert (row["status"], row["provider_ref"]) == ("succeeded", reversal["id"])
    assert status(clawbacks, reward_id) is RewardStatus.PAID
    assert balance(clawbacks, reward_id) == 0
    assert fake.count("POST /v1/transfers/*/reversals") == 1


def test_a_second_partial_refund_reverses_only_what_it_adds(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    reward_id = paid_reward(clawbacks, fake, rail)
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=40_000))
    run(clawbacks, rails_of(rail), program)
    # Refunded 800.00 of 1,200.00 in all: two thirds of the reward, 1667 (not 833 + 834).
    store(clawbacks, refund_event("evt_r2", CHARGE, NOW + timedelta(hours=1), refunded=80_000))
    run(clawbacks, rails_of(rail), program)

    assert [r["amount"] for r in fake.reversals] == [833, 834]
    assert [(r["refunded_minor"], r["clawed_back_minor"]) for r in clawback_rows(clawbacks)] == [
        (40_000, 833),
        (80_000, 834),
    ]
    assert sum(r["amount"] for r in fake.reversals) == 1667
    assert balance(clawbacks, reward_id) == 0


def test_a_full_refund_after_payout_reverses_the_whole_transfer(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    reward_id = paid_reward(clawbacks, fake, rail)
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=120_000))

    run(clawbacks, rails_of(rail), program)

    assert fake.transfers[0]["reversed"] is True
    assert entries(clawbacks, reward_id)[-2:] == [("clawed_back", -PAID), ("reversed", PAID)]


def test_a_chargeback_after_payout_reverses_the_disputed_share(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    reward_id = paid_reward(clawbacks, fake, rail)
    store(clawbacks, dispute_event("evt_d1", CHARGE, NOW, amount=120_000))

    report = run(clawbacks, rails_of(rail), program)

    assert report.clawed_back == [reward_id]
    assert [r["amount"] for r in fake.reversals] == [PAID]
    assert clawback_rows(clawbacks)[0]["cause"] == "chargeback"
    assert balance(clawbacks, reward_id) == 0


def test_a_chargeback_before_payout_cancels_the_reward(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    reward_id = unpaid_reward(clawbacks, fake)
    store(clawbacks, dispute_event("evt_d1", CHARGE, NOW, amount=50_000))

    assert run(clawbacks, rails_of(rail), program).cancelled == [reward_id]
    assert status(clawbacks, reward_id) is RewardStatus.CANCELLED


def test_churn_inside_the_window_takes_the_whole_reward_back(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    paid = paid_reward(clawbacks, fake, rail)
    unpaid = unpaid_reward(clawbacks, fake, key="deal-2", charge="ch_referee_2", referrer="C2")
    # Both referees are the same Stripe customer: its subscription ends.
    store(clawbacks, churn_event("evt_c1", "sub_1", "cus_referee", NOW))

    report = run(clawbacks, rails_of(rail), program)

    assert (report.cancelled, report.clawed_back) == ([unpaid], [paid])
    assert [r["amount"] for r in fake.reversals] == [PAID]
    assert status(clawbacks, unpaid) is RewardStatus.CANCELLED
    assert (balance(clawbacks, paid), balance(clawbacks, unpaid)) == (0, 0)


def test_churn_outside_the_window_changes_nothing(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    paid = paid_reward(clawbacks, fake, rail)
    unpaid = unpaid_reward(clawbacks, fake, key="deal-2", charge="ch_referee_2", referrer="C2")
    late = CONVERSION_AT + timedelta(days=program.clawbacks.window_days, seconds=1)
    store(clawbacks, churn_event("evt_c1", "sub_1", "cus_referee", late))

    report = run(clawbacks, rails_of(rail), program, late)

    assert (report.ignored, report.cancelled, report.clawed_back) == (1, [], [])
    assert fake.reversals == []
    assert status(clawbacks, unpaid) is RewardStatus.PAYABLE
    assert entries(clawbacks, paid) == [("accrued", PAID), ("paid", -PAID)]
    assert clawbacks.provider_events.unprocessed_stripe_events(None, 10) == []


def test_a_cause_switched_off_changes_nothing(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    reward_id = paid_reward(clawbacks, fake, rail)
    store(clawbacks, churn_event("evt_c1", "sub_1", "cus_referee", NOW))
    no_churn = program.model_copy(update={"clawbacks": Clawbacks(on_churn=False)})

    assert run(clawbacks, rails_of(rail), no_churn).ignored == 1
    assert balance(clawbacks, reward_id) == 0
    assert fake.reversals == []


def test_a_credit_paid_to_a_customer_balance_is_taken_back_as_a_debit(
    clawbacks: Ledger, fake: FakeStripe, program: Program
) -> None:
    customer = fake.add_customer("cus_referrer")
    person = contact("C1", "A-C1", stripe_customer_id=customer)
    reward_id = seed_payable_reward(clawbacks, person, NOW, amount=Money(PAID, "EUR"))
    link_payment(clawbacks, reward_id, CHARGE, NOW)
    with StripeBalanceRail.connect(
        fake.api_key, api_base=fake.url, max_network_retries=0, clock=fake.now
    ) as balance_rail:
        assert submit_payouts.fn(clawbacks, rails_of(balance_rail), [reward_id], NOW).paid == 1
        store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=60_000))
        run(clawbacks, rails_of(balance_rail), program)

    credit, debit = fake.balance_transactions
    assert (credit["amount"], debit["amount"]) == (-PAID, 1250)
    assert debit["metadata"] == {"reward_id": reward_id}
    assert fake.customer_balance(customer) == -1250
    assert balance(clawbacks, reward_id) == 0


# -- exactly once despite crashes ---------------------------------------------------------


class CrashingRail:
    """Dies (raises) before, or after, the real rail reverses."""

    def __init__(self, inner: StripeTransferRail, when: str) -> None:
        self.kind = inner.kind
        self._inner, self._when = inner, when

    def pay(self, instructions: Sequence[Any]) -> list[Any]:
        return self._inner.pay(instructions)

    def reverse(self, instructions: Sequence[ReversalInstruction]) -> list[ReversalResult]:
        if self._when == "before_call":
            raise RuntimeError("killed before the call")
        self._inner.reverse(instructions)
        raise RuntimeError("killed before the result was recorded")


@pytest.mark.parametrize("when", ["before_call", "after_call"])
def test_a_crash_around_the_reversal_call_reverses_once_on_the_next_run(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program, when: str
) -> None:
    reward_id = paid_reward(clawbacks, fake, rail)
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=60_000))

    with pytest.raises(RuntimeError, match="killed"):
        run(clawbacks, rails_of(CrashingRail(rail, when)), program)

    (stored,) = reversal_rows(clawbacks, reward_id)
    assert (stored["status"], stored["amount_minor"]) == ("pending", 1250)
    assert entries(clawbacks, reward_id)[-1] == ("clawed_back", -1250)
    assert len(fake.reversals) == (0 if when == "before_call" else 1)

    report = run(clawbacks, rails_of(rail), program)

    assert report.reversals == {"succeeded": 1}
    (reversal,) = fake.reversals
    assert reversal["amount"] == 1250
    assert {r.idempotency_key for r in fake.requests if "reversals" in r.path} == {
        stored["idempotency_key"]
    }
    assert entries(clawbacks, reward_id)[-2:] == [("clawed_back", -1250), ("reversed", 1250)]
    assert run(clawbacks, rails_of(rail), program) == ClawbackReport()


def test_an_event_waits_while_the_rewards_payout_is_under_way(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    reward_id = unpaid_reward(clawbacks, fake)
    # A payout was prepared (its key stored) and the run died before settling it.
    clawbacks.payouts.prepare([(reward_id, rail.kind, fake.add_account())], NOW)
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=120_000))

    waiting = run(clawbacks, rails_of(rail), program)
    assert (waiting.deferred, waiting.cancelled) == (1, [])
    assert status(clawbacks, reward_id) is RewardStatus.PAYABLE

    # A lease later the next payout run takes the abandoned payout over: paid.
    submit_payouts.fn(clawbacks, rails_of(rail), [], NOW + CLAIM_LEASE)
    settled = run(clawbacks, rails_of(rail), program)

    assert settled.clawed_back == [reward_id]
    assert [r["amount"] for r in fake.reversals] == [PAID]
    assert balance(clawbacks, reward_id) == 0


def test_an_event_waits_for_the_rewards_of_its_conversion_to_be_computed(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    code = given_referrer(clawbacks, NOW, "C1")
    conversion = conversion_for(code, "C1", 1, NOW)
    clawbacks.conversions.record_conversions([], [conversion], [], NOW)
    reward = reward_for(conversion, PAID, NOW)
    with clawbacks.engine.begin() as conn:  # the payment is linked before any reward
        conn.execute(
            insert(ConversionPaymentRow),
            {
                "provider": "stripe",
                "payment_ref": CHARGE,
                "conversion_id": conversion.conversion_id,
                "customer_ref": None,
                "amount_minor": 120_000,
                "currency": "EUR",
                "created_at": NOW,
            },
        )
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=120_000))

    early = run(clawbacks, rails_of(rail), program)
    clawbacks.rewards.record([conversion.conversion_id], [reward], [], NOW)
    later = run(clawbacks, rails_of(rail), program)

    assert (early.deferred, early.applied) == (1, 0)
    assert later.cancelled == [reward.reward_id]
    assert status(clawbacks, reward.reward_id) is RewardStatus.CANCELLED


# -- debts and netting --------------------------------------------------------------------


def test_an_unrecoverable_reversal_leaves_a_debt_netted_from_the_next_payout(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    account = fake.add_account("acct_spender", balance={"eur": 0})
    first = paid_reward(clawbacks, fake, rail, account=account)
    fake.set_account_balance(account, "eur", 300)  # the referrer spent the transfer
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=60_000))

    report = run(clawbacks, rails_of(rail), program)

    assert report.reversals == {"unrecovered": 1}
    assert fake.reversals == []
    assert balance(clawbacks, first) == -1250
    assert clawbacks.reversals.debts(["C1"]) == {"C1": Money(1250, "EUR")}
    (row,) = reversal_rows(clawbacks, first)
    assert row["status"] == "unrecovered"
    assert "balance_insufficient" in (row["error"] or "")

    second = unpaid_reward(clawbacks, fake, key="deal-2", charge="ch_2", account=account)
    assert submit_payouts.fn(clawbacks, rails_of(rail), [second], NOW).paid == 1

    assert [t["amount"] for t in fake.transfers] == [PAID, PAID - 1250]
    assert entries(clawbacks, second) == [
        ("accrued", PAID),
        ("netted", -1250),
        ("paid", -(PAID - 1250)),
    ]
    assert entries(clawbacks, first)[-1] == ("netted", 1250)
    assert (balance(clawbacks, first), balance(clawbacks, second)) == (0, 0)
    assert clawbacks.reversals.debts(["C1"]) == {}


def test_a_debt_larger_than_the_next_reward_takes_it_all_and_pays_nothing(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    account = fake.add_account("acct_spender", balance={"eur": 0})
    first = paid_reward(clawbacks, fake, rail, account=account)
    fake.set_account_balance(account, "eur", 0)
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=120_000))
    run(clawbacks, rails_of(rail), program)
    assert balance(clawbacks, first) == -PAID

    person = contact("C1", "A-C1", stripe_account_id=account)
    second = seed_payable_reward(clawbacks, person, NOW, key="deal-2", amount=Money(1000, "EUR"))
    report = submit_payouts.fn(clawbacks, rails_of(rail), [second], NOW)

    assert report.paid == 0
    assert len(fake.transfers) == 1  # nothing paid: the whole reward settled the debt
    assert status(clawbacks, second) is RewardStatus.PAID
    assert entries(clawbacks, second) == [("accrued", 1000), ("netted", -1000)]
    assert (balance(clawbacks, first), balance(clawbacks, second)) == (-1500, 0)
    assert clawbacks.reversals.debts(["C1"]) == {"C1": Money(1500, "EUR")}


def test_two_debts_are_netted_from_one_payout_oldest_first(
    clawbacks: Ledger, fake: FakeStripe, program: Program
) -> None:
    recording = RecordingRail(PayoutRailKind.STRIPE_TRANSFER)
    account = fake.add_account()
    older = unpaid_reward(clawbacks, fake, key="deal-1", charge="ch_1", account=account)
    newer = unpaid_reward(clawbacks, fake, key="deal-2", charge="ch_2", account=account)
    submit_payouts.fn(clawbacks, rails_of(recording), [older, newer], NOW)
    for n, (reward_id, charge) in enumerate(((older, "ch_1"), (newer, "ch_2"))):
        store(clawbacks, refund_event(f"evt_{n}", charge, NOW, refunded=120_000))
        reversal_id = derived_id("reversal", derived_id("clawback", reward_id, f"evt_{n}"))
        recording.script_reversal(reversal_id, [ReversalOutcome.INSUFFICIENT_FUNDS])
    run(clawbacks, rails_of(recording), program)
    assert clawbacks.reversals.debts(["C1"]) == {"C1": Money(2 * PAID, "EUR")}

    person = contact("C1", "A-C1", stripe_account_id=account)
    big = seed_payable_reward(clawbacks, person, NOW, key="deal-3", amount=Money(6000, "EUR"))
    submit_payouts.fn(clawbacks, rails_of(recording), [big], NOW)

    assert recording.paid[-1].amount == Money(6000 - 2 * PAID, "EUR")
    assert entries(clawbacks, big) == [("accrued", 6000), ("netted", -2 * PAID), ("paid", -1000)]
    assert entries(clawbacks, older)[-1] == ("netted", PAID)
    assert entries(clawbacks, newer)[-1] == ("netted", PAID)
    assert clawbacks.reversals.debts(["C1"]) == {}


def test_a_debt_still_being_reversed_is_not_netted(
    clawbacks: Ledger, fake: FakeStripe, program: Program
) -> None:
    recording = RecordingRail(PayoutRailKind.STRIPE_TRANSFER)
    account = fake.add_account()
    first = unpaid_reward(clawbacks, fake, account=account)
    second = unpaid_reward(clawbacks, fake, key="deal-2", charge="ch_2", account=account)
    submit_payouts.fn(clawbacks, rails_of(recording), [first], NOW)
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=120_000))
    reversal_id = derived_id("reversal", derived_id("clawback", first, "evt_r1"))
    recording.script_reversal(reversal_id, [ReversalOutcome.RETRYABLE])

    assert run(clawbacks, rails_of(recording), program).reversals == {"retry_later": 1}
    assert [r["status"] for r in reversal_rows(clawbacks, first)] == ["pending"]
    submit_payouts.fn(clawbacks, rails_of(recording), [second], NOW)

    assert [i.amount.amount_minor for i in recording.paid] == [PAID, PAID]  # nothing netted
    assert clawbacks.reversals.debts(["C1"]) == {}
    assert balance(clawbacks, first) == -PAID  # owed until the reversal settles

    run(clawbacks, rails_of(recording), program)  # the provider answers this time
    assert balance(clawbacks, first) == 0
    assert [i.amount.amount_minor for i in recording.reversed] == [PAID]


# -- duplicate and reordered events -------------------------------------------------------


def test_a_refund_delivered_before_its_payment_is_applied_once_the_payment_is_known(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    reward_id = paid_reward(clawbacks, fake, rail, charge="ch_unrelated")
    store(clawbacks, refund_event("evt_r1", "ch_late", NOW, refunded=60_000))

    early = run(clawbacks, rails_of(rail), program)
    assert (early.waiting_for_payment, early.applied) == (1, 0)
    assert [e.event_id for e in clawbacks.provider_events.unprocessed_stripe_events(None, 10)] == [
        "evt_r1"
    ]

    link_payment(clawbacks, reward_id, "ch_late", NOW)  # the payment reaches the conversion
    later = run(clawbacks, rails_of(rail), program)
    last = run(clawbacks, rails_of(rail), program)

    assert (later.applied, later.clawed_back) == (1, [reward_id])
    assert last == ClawbackReport()
    assert [r["amount"] for r in fake.reversals] == [1250]
    assert len(clawback_rows(clawbacks)) == 1


def test_the_same_event_delivered_five_times_is_applied_once(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    reward_id = paid_reward(clawbacks, fake, rail)
    event = refund_event("evt_r1", CHARGE, NOW, refunded=60_000)

    stored = [
        clawbacks.provider_events.store_stripe_event(event, NOW + timedelta(seconds=n))
        for n in range(5)
    ]
    reports = [run(clawbacks, rails_of(rail), program) for _ in range(5)]

    assert stored == [True, False, False, False, False]
    assert sum(r.applied for r in reports) == 1
    assert [r["amount"] for r in fake.reversals] == [1250]
    assert entries(clawbacks, reward_id).count(("clawed_back", -1250)) == 1
    assert len(clawback_rows(clawbacks)) == 1


def test_an_older_refund_read_after_a_newer_one_adds_nothing(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    reward_id = paid_reward(clawbacks, fake, rail)
    store(clawbacks, refund_event("evt_r2", CHARGE, NOW + timedelta(hours=1), refunded=80_000))
    run(clawbacks, rails_of(rail), program)
    # The first partial refund's event arrives late (Stripe retried its delivery).
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=40_000))
    report = run(clawbacks, rails_of(rail), program)

    assert report.applied == 1
    assert [r["amount"] for r in fake.reversals] == [1667]
    assert balance(clawbacks, reward_id) == 0


def test_a_malformed_event_is_quarantined_and_never_retried(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    broken = refund_event("evt_bad", CHARGE, NOW, refunded=100)
    del broken["data"]["object"]["amount_refunded"]
    store(clawbacks, broken)

    report = run(clawbacks, rails_of(rail), program)

    assert report.malformed == 1
    assert clawbacks.provider_events.unprocessed_stripe_events(None, 10) == []
    (quarantined,) = clawbacks.sources.quarantined()
    assert quarantined["stage"] == "clawback"
    assert quarantined["field"] == "data.object.amount_refunded"


def test_a_refund_no_conversion_claims_for_a_whole_window_is_given_up(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    store(clawbacks, refund_event("evt_other", "ch_not_a_referral", NOW, refunded=100))
    later = NOW + timedelta(days=program.clawbacks.window_days + 1)

    assert run(clawbacks, rails_of(rail), program).waiting_for_payment == 1
    assert run(clawbacks, rails_of(rail), program, later).given_up == 1
    assert clawbacks.provider_events.unprocessed_stripe_events(None, 10) == []


def clawback_notices(ledger: Ledger) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (kind, contact.contact_id, data)
        for _id, kind, contact, data in ledger.emails.notifications_to_send("", 100)
        if kind == "reward_clawed_back"
    ]


def test_the_referrer_is_told_once_what_a_refund_took_back_after_payout_and_why(
    clawbacks: Ledger, fake: FakeStripe, rail: StripeTransferRail, program: Program
) -> None:
    reward_id = paid_reward(clawbacks, fake, rail)
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=40_000))

    run(clawbacks, rails_of(rail), program)
    run(clawbacks, rails_of(rail), program)

    ((kind, referrer_id, data),) = clawback_notices(clawbacks)
    assert referrer_id == clawbacks.rewards.of([reward_id])[reward_id].reward.referrer_id
    assert data == {
        "amount": Money(833, "EUR").format(),
        "cause": "the referred customer's payment was refunded",
        "after_payout": "yes",
    }
    contact = clawbacks.asks.contacts([referrer_id])[referrer_id]
    message = compose_notice("n1", kind, contact, data, program)
    assert message.subject == "A change to your referral reward"
    assert f"taken back {data['amount']} of a referral reward" in message.data["text"]
    assert "refunded" in message.data["text"]


def test_the_referrer_is_told_when_a_refund_cancels_a_reward_before_payout(
    clawbacks: Ledger, fake: FakeStripe, program: Program
) -> None:
    unpaid_reward(clawbacks, fake)
    store(clawbacks, refund_event("evt_r1", CHARGE, NOW, refunded=30_000))

    run(clawbacks, {}, program)

    ((_, _, data),) = clawback_notices(clawbacks)
    assert data["after_payout"] == "no"
    assert data["amount"] == Money(PAID, "EUR").format()

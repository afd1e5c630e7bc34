"""Recording a decision as a use case, on the in-memory ledger: one unit of work that
reads the reward through ``approvals``, applies :mod:`domain.approvals` and writes the
decision, the entry, the new status and the notice, or nothing at all."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.approvals import CheckedDecision
from domain.errors import DecisionConflict, InvalidDecision
from domain.models import Decision, Milestone, Reward, RewardStatus, RewardView
from domain.money import Money
from integrations.ledger.memory import InMemoryLedger
from tasks.use_cases.approvals import record_decision

NOW = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
REWARD_ID = "reward-1"


def eur(minor: int) -> Money:
    return Money(minor, "EUR")


def awaiting(amount_minor: int = 90_000) -> InMemoryLedger:
    ledger = InMemoryLedger()
    reward = Reward(
        reward_id=REWARD_ID,
        conversion_id="conv-1",
        rule_id="customer-flat",
        referrer_id="C1",
        amount=eur(amount_minor),
        milestone=Milestone.CUSTOMER,
        attribution_model="last_touch",
        payable_at=NOW,
        explanation="flat reward for a new customer",
    )
    ledger.approvals.add_reward(
        RewardView(reward, RewardStatus.AWAITING_APPROVAL, eur(amount_minor))
    )
    ledger.approvals.open_requests([REWARD_ID], NOW)
    return ledger


def decided(
    approver_id: str, amount_minor: int, decision: Decision = Decision.APPROVE
) -> CheckedDecision:
    return CheckedDecision(
        decision=decision,
        approver_id=approver_id,
        approver=approver_id.title(),
        reason="checked the deal",
        amount=eur(amount_minor),
    )


def test_the_first_of_two_approvals_leaves_the_reward_waiting_and_books_nothing() -> None:
    ledger = awaiting()

    status = record_decision(ledger, REWARD_ID, 1, decided("ann", 90_000), 2, "run-1", NOW)

    assert status is RewardStatus.AWAITING_APPROVAL
    assert ledger.approvals.entries == []
    assert [w.stages_done for w in ledger.approvals.waiting()] == [1]
    assert ledger.committed == 1


def test_a_final_approval_pays_the_least_any_approver_agreed_to() -> None:
    ledger = awaiting()
    record_decision(ledger, REWARD_ID, 1, decided("ann", 60_000), 2, None, NOW)

    status = record_decision(ledger, REWARD_ID, 2, decided("bob", 90_000), 2, None, NOW)

    assert status is RewardStatus.APPROVED
    assert [(kind, amount) for _, kind, amount, _ in ledger.approvals.entries] == [
        ("adjusted", eur(-30_000))
    ]
    assert ledger.approvals.reward(REWARD_ID) == RewardView(
        ledger.approvals.rewards[REWARD_ID].reward, RewardStatus.APPROVED, eur(60_000)
    )
    assert ledger.approvals.waiting() == []


def test_a_rejection_cancels_the_balance_closes_the_request_and_tells_the_referrer() -> None:
    ledger = awaiting()

    status = record_decision(
        ledger, REWARD_ID, 1, decided("ann", 90_000, Decision.REJECT), 1, None, NOW
    )

    assert status is RewardStatus.REJECTED
    assert [(kind, amount) for _, kind, amount, _ in ledger.approvals.entries] == [
        ("cancelled", eur(-90_000))
    ]
    assert [n["kind"] for n in ledger.approvals.notices] == ["reward_rejected"]
    assert [r.status for r in ledger.approvals.requests.values()] == ["decided"]


def test_the_approver_of_the_first_stage_cannot_decide_the_second_and_nothing_is_written() -> None:
    ledger = awaiting()
    record_decision(ledger, REWARD_ID, 1, decided("ann", 90_000), 2, None, NOW)

    with pytest.raises(InvalidDecision, match="second, different approver"):
        record_decision(ledger, REWARD_ID, 2, decided("ann", 90_000), 2, None, NOW)

    assert [d.stage for d in ledger.approvals.decisions(REWARD_ID)] == [1]
    assert ledger.approvals.rewards[REWARD_ID].status is RewardStatus.AWAITING_APPROVAL
    assert ledger.rolled_back == 1


def test_a_stage_decided_twice_raises_a_conflict_and_leaves_the_first_decision_alone() -> None:
    ledger = awaiting()
    record_decision(ledger, REWARD_ID, 1, decided("ann", 90_000), 2, None, NOW)

    with pytest.raises(DecisionConflict):
        record_decision(ledger, REWARD_ID, 1, decided("bob", 90_000, Decision.REJECT), 2, None, NOW)

    assert [d.approver_id for d in ledger.approvals.decisions(REWARD_ID)] == ["ann"]
    assert ledger.approvals.notices == []


def test_a_decision_on_a_reward_no_longer_awaiting_approval_writes_nothing() -> None:
    ledger = awaiting()
    record_decision(ledger, REWARD_ID, 1, decided("ann", 90_000), 1, None, NOW)

    with pytest.raises(InvalidDecision, match="not awaiting approval"):
        record_decision(ledger, REWARD_ID, 2, decided("bob", 90_000), 1, None, NOW)

    assert [d.approver_id for d in ledger.approvals.decisions(REWARD_ID)] == ["ann"]
    assert ledger.approvals.rewards[REWARD_ID].status is RewardStatus.APPROVED
    assert (ledger.committed, ledger.rolled_back) == (1, 1)

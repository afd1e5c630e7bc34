"""One approvals scenario, the same answers from the SQL store (SQLite, PostgreSQL) and
from its in-memory fake: requests opened, a two-stage decision recorded through the use
case, the request closed and the reward paying what both approvers agreed to."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from domain.approvals import CheckedDecision
from domain.errors import DecisionConflict
from domain.models import Decision, RewardStatus, RewardView
from domain.money import Money
from domain.stores.approvals import ApprovalsLedger
from integrations.ledger.engine import make_engine
from integrations.ledger.memory import InMemoryLedger
from integrations.ledger.sql import SqlLedger
from tasks.use_cases.approvals import record_decision
from tests.integration.test_ledger_flow import conversion_for, given_reward, reward_for


def approve(approver_id: str, amount_minor: int) -> CheckedDecision:
    return CheckedDecision(
        decision=Decision.APPROVE,
        approver_id=approver_id,
        approver=approver_id.title(),
        reason="checked the deal",
        amount=Money(amount_minor, "EUR"),
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
def seeded(request: pytest.FixtureRequest, now: datetime) -> Iterator[tuple[ApprovalsLedger, str]]:
    """A ledger holding one reward of 900.00 EUR awaiting approval, and its id."""
    if request.param == "memory":
        memory = InMemoryLedger()
        reward = reward_for(conversion_for("CODE-C1", "C1", 1, now), 90_000, now)
        memory.approvals.add_reward(
            RewardView(reward, RewardStatus.AWAITING_APPROVAL, reward.amount)
        )
        yield memory, reward.reward_id
        return
    engine = make_engine(str(request.getfixturevalue(f"{request.param}_url")))
    ledger = SqlLedger(engine)
    reward = given_reward(ledger, now, amount_minor=90_000, status=RewardStatus.AWAITING_APPROVAL)
    yield ledger, reward.reward_id
    engine.dispose()


def test_a_two_stage_approval_reads_and_writes_the_same_on_sql_and_in_memory(
    seeded: tuple[ApprovalsLedger, str], now: datetime
) -> None:
    ledger, reward_id = seeded
    [(request_id, run_id)] = ledger.approvals.open_requests([reward_id], now).values()
    ledger.approvals.attach_flow_runs({request_id: "run-1"})

    after_first = record_decision(ledger, reward_id, 1, approve("ann", 60_000), 2, "run-1", now)
    with pytest.raises(DecisionConflict):
        record_decision(ledger, reward_id, 1, approve("bob", 90_000), 2, "run-1", now)
    waiting = [(w.reward_id, w.stages_done, w.flow_run_id) for w in ledger.approvals.waiting()]
    after_second = record_decision(ledger, reward_id, 2, approve("bob", 90_000), 2, "run-1", now)

    assert run_id is None
    assert ledger.approvals.reward_of_run("run-1") == reward_id
    assert (after_first, after_second) == (RewardStatus.AWAITING_APPROVAL, RewardStatus.APPROVED)
    assert waiting == [(reward_id, 1, "run-1")]
    assert [(d.stage, d.approver_id) for d in ledger.approvals.decisions(reward_id)] == [
        (1, "ann"),
        (2, "bob"),
    ]
    reward = ledger.approvals.reward(reward_id)
    assert reward is not None
    assert (reward.status, reward.balance) == (RewardStatus.APPROVED, Money(60_000, "EUR"))
    assert ledger.approvals.waiting() == []
    assert ledger.approvals.overdue(now + timedelta(days=30)) == []
    assert ledger.approvals.awaiting_without_request(10) == []


def test_an_expired_request_leaves_its_reward_awaiting_a_new_one_on_sql_and_in_memory(
    seeded: tuple[ApprovalsLedger, str], now: datetime
) -> None:
    ledger, reward_id = seeded
    [(request_id, _)] = ledger.approvals.open_requests([reward_id], now).values()

    overdue = ledger.approvals.overdue(now + timedelta(hours=1))
    ledger.approvals.mark_reminded([request_id], now)
    reminded_again = ledger.approvals.overdue(now + timedelta(hours=1), reminded_before=now)
    expired = ledger.approvals.expire_requests([request_id, request_id], now)
    orphaned = ledger.approvals.awaiting_without_request(10)
    [(renewed, _)] = ledger.approvals.open_requests([reward_id], now).values()

    assert overdue == [(request_id, reward_id, None)]
    assert reminded_again == []
    assert expired == [request_id]
    assert orphaned == [reward_id]
    assert renewed != request_id
